//! [`Cells`]: a table of cells indexed by a number, growing without ever moving a
//! cell. A storage keeps its non-inheritable values in one, and its dynamic keys in
//! another.

use std::cell::{OnceCell, RefCell};

/// How many cells live inline in a [`Cells`]; programs rarely have more keys.
pub(crate) const INLINE: usize = 8;
/// Further buckets double in size: bucket `b` holds `INLINE << b` cells.
const BUCKETS: usize = 40;

type Bucket<T> = OnceCell<Box<[RefCell<Option<T>>]>>;

/// A table of cells indexed by a number, growing without ever moving a cell.
pub(crate) struct Cells<T> {
    inline: [RefCell<Option<T>>; INLINE],
    more: OnceCell<Box<[Bucket<T>; BUCKETS]>>,
}

impl<T> Cells<T> {
    pub(crate) fn new() -> Self {
        Cells {
            inline: std::array::from_fn(|_| RefCell::new(None)),
            more: OnceCell::new(),
        }
    }

    /// The cell for `index` if it is one of the inline cells: the fast paths use only
    /// these, so that nothing on them calls out of line.
    #[inline(always)]
    pub(crate) fn get_inline(&self, index: usize) -> Option<&RefCell<Option<T>>> {
        self.inline.get(index)
    }

    /// The cell for `index`, if it was ever created.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&RefCell<Option<T>>> {
        match self.inline.get(index) {
            Some(cell) => Some(cell),
            None => self.get_outlined(index),
        }
    }

    #[cold]
    fn get_outlined(&self, index: usize) -> Option<&RefCell<Option<T>>> {
        let (bucket, offset) = locate(index);
        self.more.get()?.get(bucket)?.get()?.get(offset)
    }

    /// The cell for `index`, created if needed.
    pub(crate) fn get_or_create(&self, index: usize) -> &RefCell<Option<T>> {
        if let Some(cell) = self.inline.get(index) {
            return cell;
        }
        let (bucket, offset) = locate(index);
        let buckets = self
            .more
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceCell::new())));
        // `locate` keeps `bucket < BUCKETS` for every index below 2^43; the last bucket
        // absorbs anything beyond (unreachable: indices come from a counter of keys).
        let bucket = bucket.min(BUCKETS - 1);
        let cells = buckets[bucket]
            .get_or_init(|| (0..INLINE << bucket).map(|_| RefCell::new(None)).collect());
        &cells[offset.min(cells.len() - 1)]
    }

    /// `f` with every cell created so far: the inline cells in a loop of their own,
    /// with no iterator adapter between them and `f` (a chained iterator stepped cell
    /// by cell costs several times as much on the teardown of every owner).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&RefCell<Option<T>>)) {
        for cell in &self.inline {
            f(cell);
        }
        if let Some(buckets) = self.more.get() {
            for cells in buckets.iter().filter_map(OnceCell::get) {
                cells.iter().for_each(&mut f);
            }
        }
    }

    /// Every cell created so far.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RefCell<Option<T>>> {
        let more = self.more.get().into_iter().flat_map(|buckets| {
            buckets
                .iter()
                .filter_map(|bucket| bucket.get())
                .flat_map(|cells| cells.iter())
        });
        self.inline.iter().chain(more)
    }
}

fn bucket_index(index: usize) -> usize {
    // index >= INLINE: bucket b covers [INLINE << b, INLINE << (b + 1)).
    (usize::BITS - 1 - (index / INLINE).leading_zeros()) as usize
}

fn locate(index: usize) -> (usize, usize) {
    let bucket = bucket_index(index);
    (bucket, index - (INLINE << bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_never_move_and_cover_many_indices() {
        let cells: Cells<u32> = Cells::new();
        for i in [0, 7, 8, 15, 16, 100, 1000, 70_000] {
            *cells.get_or_create(i).borrow_mut() = Some(i as u32);
        }
        let first = cells.get(8).unwrap() as *const _;
        cells.get_or_create(5000);
        assert_eq!(first, cells.get(8).unwrap() as *const _);
        for i in [0, 7, 8, 15, 16, 100, 1000, 70_000] {
            assert_eq!(*cells.get(i).unwrap().borrow(), Some(i as u32));
        }
        assert!(cells.get(200_000).is_none());
        let n = cells.iter().filter(|c| c.borrow().is_some()).count();
        assert_eq!(n, 8);
    }

    #[test]
    fn locate_is_contiguous() {
        let mut expected = (0, 0);
        for i in INLINE..10_000 {
            assert_eq!(locate(i), expected, "index {i}");
            expected.1 += 1;
            if expected.1 == INLINE << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
    }
}
