//! A model test of inheritance (SPEC sections 4 and 10): random sequences of operations
//! on one key of every kind — non-inheritable, inheritable, `inheritable_with` — with
//! captures (snapshots) and nested children in between, applied both to tasklocal (in a
//! fresh owner per case) and to a model. Every operation must return what the model
//! says, and every capture must keep the values as of its creation: `Snapshot::get`
//! the value as it was, a run of the snapshot the value forked by `inheritable_with`,
//! once per child owner, on first access. Typed and dynamic keys without children:
//! `model.rs`.

mod support;

use proptest::prelude::*;
use support::fresh;
use tasklocal::{Local, Snapshot};

static P0: Local<u32> = Local::new();
static I0: Local<u32> = Local::inheritable();
static I1: Local<u32> = Local::inheritable();
static W0: Local<u32> = Local::inheritable_with(|v| v + 1000);
static W1: Local<u32> = Local::inheritable_with(|v| v * 2 + 1);

/// The keys, by index.
const N: usize = 5;

fn key(k: usize) -> &'static Local<u32> {
    [&P0, &I0, &I1, &W0, &W1][k]
}

fn kind(k: usize) -> Kind {
    [
        Kind::Plain,
        Kind::Inherited,
        Kind::Inherited,
        Kind::Forked,
        Kind::Forked,
    ][k]
}

/// The fork functions of `W0` and `W1`.
fn fork(k: usize, v: u32) -> u32 {
    match k {
        3 => v.wrapping_add(1000),
        4 => v.wrapping_mul(2).wrapping_add(1),
        _ => unreachable!(),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Plain,
    Inherited,
    Forked,
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, u32),
    Get(usize),
    WithMut(usize, u32),
    Take(usize),
    Replace(usize, u32),
    IsSet(usize),
    Reset,
    Capture,
    Child(Vec<Op>),
}

/// One key's state in an owner.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    value: Option<u32>,
    /// Inherited and not forked yet (forked keys only).
    pending: bool,
    /// Captured since it was stored: taking it out or writing it in place forks it
    /// first (forked keys only).
    captured: bool,
}

#[derive(Clone, Debug, Default)]
struct Model {
    slots: [Slot; N],
}

/// What a capture holds, per key: the value as passed on to a child, not forked yet
/// (`None` for the non-inheritable key).
type Seed = [Option<u32>; N];

impl Model {
    /// What a child created now starts with.
    fn seed(&self) -> Seed {
        std::array::from_fn(|k| match kind(k) {
            Kind::Plain => None,
            _ => self.slots[k].value,
        })
    }

    /// The seed of a capture; every value stored here is captured from now on.
    fn capture(&mut self) -> Seed {
        for s in self.slots.iter_mut() {
            if !s.pending && s.value.is_some() {
                s.captured = true;
            }
        }
        self.seed()
    }

    /// A child's state at its creation.
    fn from_seed(seed: &Seed) -> Model {
        let mut m = Model::default();
        for (k, (slot, value)) in m.slots.iter_mut().zip(seed).enumerate() {
            slot.value = *value;
            slot.pending = kind(k) == Kind::Forked && value.is_some();
        }
        m
    }

    /// A child's first access forks what it inherited.
    fn touch(&mut self, k: usize) {
        let s = &mut self.slots[k];
        if s.pending {
            s.pending = false;
            s.captured = false;
            s.value = s.value.map(|v| fork(k, v));
        }
    }

    /// `op` applied to the model; `snaps` collects the captures.
    fn apply(&mut self, op: &Op, snaps: &mut Vec<Seed>) -> Out {
        match *op {
            Op::Set(k, v) => {
                self.slots[k] = Slot {
                    value: Some(v),
                    pending: false,
                    captured: false,
                };
                Out::Unit
            }
            Op::Get(k) => {
                self.touch(k);
                Out::V(self.slots[k].value)
            }
            Op::IsSet(k) => Out::B(self.slots[k].value.is_some()),
            Op::WithMut(k, add) => {
                self.touch(k);
                let s = &mut self.slots[k];
                if kind(k) == Kind::Forked && s.captured {
                    s.value = s.value.map(|v| fork(k, v));
                    s.captured = false;
                }
                match s.value.as_mut() {
                    Some(v) => {
                        *v = v.wrapping_add(add);
                        Out::V(Some(*v))
                    }
                    None => Out::V(None),
                }
            }
            Op::Take(k) => {
                self.touch(k);
                let s = &mut self.slots[k];
                let v = s.value.take();
                let v = if kind(k) == Kind::Forked && s.captured {
                    v.map(|v| fork(k, v))
                } else {
                    v
                };
                s.captured = false;
                Out::V(v)
            }
            Op::Replace(k, new) => {
                self.touch(k);
                let s = &mut self.slots[k];
                let v = s.value.replace(new);
                let v = if kind(k) == Kind::Forked && s.captured {
                    v.map(|v| fork(k, v))
                } else {
                    v
                };
                s.captured = false;
                Out::V(v)
            }
            Op::Reset => {
                *self = Model::default();
                Out::Unit
            }
            Op::Capture => {
                snaps.push(self.capture());
                Out::Unit
            }
            Op::Child(ref ops) => {
                let seed = self.capture();
                let mut child = Model::from_seed(&seed);
                let mut inner = Vec::new();
                let outs = ops.iter().map(|op| child.apply(op, &mut inner)).collect();
                Out::Child(outs, model_seen(&inner))
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    V(Option<u32>),
    B(bool),
    /// What the child's operations returned, and what its captures showed.
    Child(Vec<Out>, Vec<Seen>),
}

/// What a capture shows, per key: what `Snapshot::get` returns (not forked; `None` for
/// the non-inheritable key), and what a run of the snapshot reads (forked).
type Seen = (Vec<Option<u32>>, Vec<Option<u32>>);

/// What the model's captures show.
fn model_seen(snaps: &[Seed]) -> Vec<Seen> {
    snaps
        .iter()
        .map(|s| {
            let raw: Vec<_> = (0..N).map(|k| s[k]).collect();
            let run: Vec<_> = (0..N)
                .map(|k| match kind(k) {
                    Kind::Forked => s[k].map(|v| fork(k, v)),
                    _ => s[k],
                })
                .collect();
            (raw, run)
        })
        .collect()
}

/// `op` applied to tasklocal, in the current owner.
fn real(op: &Op, snaps: &mut Vec<Snapshot>) -> Out {
    match *op {
        Op::Set(k, v) => {
            key(k).set(v);
            Out::Unit
        }
        Op::Get(k) => Out::V(key(k).get()),
        Op::IsSet(k) => Out::B(key(k).is_set()),
        Op::WithMut(k, add) => Out::V(key(k).with_mut(|v| {
            *v = v.wrapping_add(add);
            *v
        })),
        Op::Take(k) => Out::V(key(k).take()),
        Op::Replace(k, v) => Out::V(key(k).replace(v)),
        Op::Reset => {
            tasklocal::reset();
            Out::Unit
        }
        Op::Capture => {
            snaps.push(Snapshot::capture());
            Out::Unit
        }
        Op::Child(ref ops) => {
            // A task created and dropped unpolled captures too, and changes nothing.
            drop(tasklocal::task(async {}));
            Snapshot::capture().run(|| {
                let mut inner = Vec::new();
                let outs = ops.iter().map(|op| real(op, &mut inner)).collect();
                Out::Child(outs, real_seen(&inner))
            })
        }
    }
}

/// What tasklocal's captures show.
fn real_seen(snaps: &[Snapshot]) -> Vec<Seen> {
    snaps
        .iter()
        .map(|s| {
            let raw: Vec<_> = (0..N)
                .map(|k| {
                    if kind(k) == Kind::Plain {
                        None
                    } else {
                        s.get(key(k))
                    }
                })
                .collect();
            let run: Vec<_> = s.run(|| (0..N).map(|k| key(k).get()).collect());
            (raw, run)
        })
        .collect()
}

fn leaf() -> impl Strategy<Value = Op> {
    let k = 0..N;
    let v = 0..50u32;
    prop_oneof![
        4 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        3 => k.clone().prop_map(Op::Get),
        3 => (k.clone(), 1..5u32).prop_map(|(k, a)| Op::WithMut(k, a)),
        1 => k.clone().prop_map(Op::Take),
        1 => (k.clone(), v).prop_map(|(k, v)| Op::Replace(k, v)),
        1 => k.prop_map(Op::IsSet),
        1 => Just(Op::Reset),
        3 => Just(Op::Capture),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    leaf().prop_recursive(2, 40, 10, |inner| {
        prop_oneof![
            4 => inner.clone(),
            1 => prop::collection::vec(inner, 0..10).prop_map(Op::Child),
        ]
    })
}

fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut msnaps = Vec::new();
    let expected: Vec<Out> = ops.iter().map(|op| model.apply(op, &mut msnaps)).collect();
    let expected_snaps = model_seen(&msnaps);
    let (got, got_snaps) = fresh(|| {
        let mut snaps = Vec::new();
        let outs: Vec<Out> = ops.iter().map(|op| real(op, &mut snaps)).collect();
        (outs, real_seen(&snaps))
    });
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        prop_assert_eq!(g, e, "op #{} {:?}", i, ops[i]);
    }
    prop_assert_eq!(got_snaps, expected_snaps);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn captures_and_children_match_a_model(ops in prop::collection::vec(op(), 1..40)) {
        check(&ops)?;
    }
}

/// A case proptest once shrank a failure to: a child sets a forked key, then captures.
#[test]
fn a_child_that_sets_a_forked_key_then_captures() {
    check(&[Op::Child(vec![Op::Set(3, 0), Op::Capture])]).unwrap();
}
