//! A model test: random sequences of operations on typed keys of every kind and on
//! dynamic keys of two key types and two value types, applied both to tasklocal (in
//! a fresh `Snapshot::empty().run` per case, and on a fresh thread per case) and to a
//! `HashMap` model. After every operation, what tasklocal returns must be what the
//! model says.

use std::collections::HashMap;

use proptest::prelude::*;
use tasklocal::{Local, Snapshot};

// Typed keys: one of each kind. Values are `u32`s in the model; key 2 stores them as
// strings so that not every key has the same type.
static K0: Local<u32> = Local::new();
static K1: Local<u32> = Local::with_initial(|| 100);
static K2: Local<String> = Local::inheritable();
static K3: Local<u32> = Local::inheritable_with_initial(|| 200);

const TYPED: usize = 4;
const INIT: [Option<u32>; TYPED] = [None, Some(100), None, Some(200)];
const INHERITABLE: [bool; TYPED] = [false, false, true, true];

/// Dynamic keys: `&'static str` and `String` keys with the same text are different
/// keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DKey {
    Str(usize),
    Owned(usize),
}

const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug, PartialEq)]
enum DVal {
    Num(u32),
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum VType {
    Num,
    Text,
}

impl DVal {
    fn ty(&self) -> VType {
        match self {
            DVal::Num(_) => VType::Num,
            DVal::Text(_) => VType::Text,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, u32),
    Replace(usize, u32),
    Take(usize),
    Get(usize),
    With(usize),
    WithMut(usize, u32),
    IsSet(usize),
    Scope(usize, u32, Vec<Op>),
    DSet(DKey, DVal),
    DGet(DKey, VType),
    DWith(DKey, VType),
    DRemove(DKey),
    DTake(DKey, VType),
    Reset,
    /// A child owner created now sees the inheritable values and nothing else.
    Child,
}

/// What an operation returned, in a form both sides produce.
#[derive(Debug, PartialEq)]
enum Out {
    Unit,
    Bool(bool),
    Typed(Option<u32>),
    Dyn(Option<DVal>),
    Child(Vec<Option<u32>>),
}

#[derive(Default, Debug)]
struct Model {
    typed: [Option<u32>; TYPED],
    dynamic: HashMap<DKey, DVal>,
}

impl Model {
    /// The value, computing and storing the initial value if needed.
    fn read(&mut self, k: usize) -> Option<u32> {
        if self.typed[k].is_none() {
            self.typed[k] = INIT[k];
        }
        self.typed[k]
    }

    fn apply(&mut self, op: &Op) -> Out {
        match op {
            Op::Set(k, v) => {
                self.typed[*k] = Some(*v);
                Out::Unit
            }
            Op::Replace(k, v) => Out::Typed(self.typed[*k].replace(*v)),
            Op::Take(k) => Out::Typed(self.typed[*k].take()),
            Op::Get(k) | Op::With(k) => Out::Typed(self.read(*k)),
            Op::WithMut(k, add) => match self.read(*k) {
                Some(v) => {
                    self.typed[*k] = Some(v.wrapping_add(*add));
                    Out::Bool(true)
                }
                None => Out::Bool(false),
            },
            Op::IsSet(k) => Out::Bool(self.typed[*k].is_some()),
            Op::Scope(k, v, inner) => {
                let saved = self.typed[*k].replace(*v);
                let outs: Vec<Out> = inner.iter().map(|op| self.apply(op)).collect();
                self.typed[*k] = saved;
                Out::Child(flatten(outs))
            }
            Op::DSet(k, v) => {
                self.dynamic.insert(*k, v.clone());
                Out::Unit
            }
            Op::DGet(k, ty) | Op::DWith(k, ty) => {
                Out::Dyn(self.dynamic.get(k).filter(|v| v.ty() == *ty).cloned())
            }
            Op::DRemove(k) => Out::Bool(self.dynamic.remove(k).is_some()),
            Op::DTake(k, ty) => match self.dynamic.get(k) {
                Some(v) if v.ty() == *ty => Out::Dyn(self.dynamic.remove(k)),
                _ => Out::Dyn(None),
            },
            Op::Reset => {
                *self = Model::default();
                Out::Unit
            }
            Op::Child => Out::Child(
                (0..TYPED)
                    .map(|k| match INHERITABLE[k] {
                        true => self.typed[k].or(INIT[k]),
                        false => INIT[k],
                    })
                    .collect(),
            ),
        }
    }
}

/// The outputs of a scope's inner operations, as one comparable value.
fn flatten(outs: Vec<Out>) -> Vec<Option<u32>> {
    outs.into_iter()
        .map(|o| match o {
            Out::Unit => None,
            Out::Bool(b) => Some(u32::from(b) + 1_000_000),
            Out::Typed(v) => v,
            Out::Dyn(v) => match v {
                None => Some(2_000_000),
                Some(DVal::Num(n)) => Some(n),
                Some(DVal::Text(t)) => Some(t.len() as u32 + 3_000_000),
            },
            Out::Child(v) => Some(v.len() as u32 + 4_000_000),
        })
        .collect()
}

// The tasklocal side.

fn text(v: u32) -> String {
    format!("v{v}")
}

fn untext(s: &str) -> u32 {
    s[1..].parse().unwrap()
}

fn t_set(k: usize, v: u32) {
    match k {
        0 => K0.set(v),
        1 => K1.set(v),
        2 => K2.set(text(v)),
        _ => K3.set(v),
    }
}

fn t_replace(k: usize, v: u32) -> Option<u32> {
    match k {
        0 => K0.replace(v),
        1 => K1.replace(v),
        2 => K2.replace(text(v)).map(|s| untext(&s)),
        _ => K3.replace(v),
    }
}

fn t_take(k: usize) -> Option<u32> {
    match k {
        0 => K0.take(),
        1 => K1.take(),
        2 => K2.take().map(|s| untext(&s)),
        _ => K3.take(),
    }
}

fn t_get(k: usize) -> Option<u32> {
    match k {
        0 => K0.get(),
        1 => K1.get(),
        2 => K2.get().map(|s| untext(&s)),
        _ => K3.get(),
    }
}

fn t_with(k: usize) -> Option<u32> {
    match k {
        0 => K0.with(|v| v.copied()),
        1 => K1.with(|v| v.copied()),
        2 => K2.with(|v| v.map(|s| untext(s))),
        _ => K3.with(|v| v.copied()),
    }
}

fn t_with_mut(k: usize, add: u32) -> bool {
    let r = match k {
        0 => K0.with_mut(|v| *v = v.wrapping_add(add)),
        1 => K1.with_mut(|v| *v = v.wrapping_add(add)),
        2 => K2.with_mut(|s| *s = text(untext(s).wrapping_add(add))),
        _ => K3.with_mut(|v| *v = v.wrapping_add(add)),
    };
    r.is_some()
}

fn t_is_set(k: usize) -> bool {
    match k {
        0 => K0.is_set(),
        1 => K1.is_set(),
        2 => K2.is_set(),
        _ => K3.is_set(),
    }
}

fn t_scope<R>(k: usize, v: u32, f: impl FnOnce() -> R) -> R {
    match k {
        0 => K0.scope(v, f),
        1 => K1.scope(v, f),
        2 => K2.scope(text(v), f),
        _ => K3.scope(v, f),
    }
}

fn d_get(k: DKey, ty: VType, with: bool) -> Option<DVal> {
    fn go<K: tasklocal::Key>(k: &K, ty: VType, with: bool) -> Option<DVal> {
        match (ty, with) {
            (VType::Num, false) => tasklocal::get::<K, u32>(k).map(DVal::Num),
            (VType::Text, false) => tasklocal::get::<K, String>(k).map(DVal::Text),
            (VType::Num, true) => tasklocal::with(k, |v: Option<&u32>| v.copied().map(DVal::Num)),
            (VType::Text, true) => {
                tasklocal::with(k, |v: Option<&String>| v.cloned().map(DVal::Text))
            }
        }
    }
    match k {
        DKey::Str(n) => go(&NAMES[n], ty, with),
        DKey::Owned(n) => go(&NAMES[n].to_string(), ty, with),
    }
}

fn d_set(k: DKey, v: DVal) {
    fn go<K: tasklocal::Key>(k: K, v: DVal) {
        match v {
            DVal::Num(n) => tasklocal::set(k, n),
            DVal::Text(t) => tasklocal::set(k, t),
        }
    }
    match k {
        DKey::Str(n) => go(NAMES[n], v),
        DKey::Owned(n) => go(NAMES[n].to_string(), v),
    }
}

fn d_remove(k: DKey) -> bool {
    match k {
        DKey::Str(n) => tasklocal::remove(&NAMES[n]),
        DKey::Owned(n) => tasklocal::remove(&NAMES[n].to_string()),
    }
}

fn d_take(k: DKey, ty: VType) -> Option<DVal> {
    fn go<K: tasklocal::Key>(k: &K, ty: VType) -> Option<DVal> {
        match ty {
            VType::Num => tasklocal::take::<K, u32>(k).map(DVal::Num),
            VType::Text => tasklocal::take::<K, String>(k).map(DVal::Text),
        }
    }
    match k {
        DKey::Str(n) => go(&NAMES[n], ty),
        DKey::Owned(n) => go(&NAMES[n].to_string(), ty),
    }
}

fn apply(op: &Op) -> Out {
    match op {
        Op::Set(k, v) => {
            t_set(*k, *v);
            Out::Unit
        }
        Op::Replace(k, v) => Out::Typed(t_replace(*k, *v)),
        Op::Take(k) => Out::Typed(t_take(*k)),
        Op::Get(k) => Out::Typed(t_get(*k)),
        Op::With(k) => Out::Typed(t_with(*k)),
        Op::WithMut(k, add) => Out::Bool(t_with_mut(*k, *add)),
        Op::IsSet(k) => Out::Bool(t_is_set(*k)),
        Op::Scope(k, v, inner) => {
            let outs = t_scope(*k, *v, || inner.iter().map(apply).collect());
            Out::Child(flatten(outs))
        }
        Op::DSet(k, v) => {
            d_set(*k, v.clone());
            Out::Unit
        }
        Op::DGet(k, ty) => Out::Dyn(d_get(*k, *ty, false)),
        Op::DWith(k, ty) => Out::Dyn(d_get(*k, *ty, true)),
        Op::DRemove(k) => Out::Bool(d_remove(*k)),
        Op::DTake(k, ty) => Out::Dyn(d_take(*k, *ty)),
        Op::Reset => {
            tasklocal::reset();
            Out::Unit
        }
        Op::Child => Snapshot::capture().run(|| {
            // Dynamic keys are not inherited.
            let dynamic: Vec<_> = (0..3)
                .flat_map(|n| [DKey::Str(n), DKey::Owned(n)])
                .flat_map(|k| [d_get(k, VType::Num, false), d_get(k, VType::Text, false)])
                .collect();
            assert!(dynamic.iter().all(Option::is_none), "{dynamic:?}");
            // A write first: reads of non-inheritable keys by a child that has no
            // storage yet have their own test in tests/inheritance.rs.
            tasklocal::set((), ());
            Out::Child((0..TYPED).map(t_get).collect())
        }),
    }
}

// Strategies.

fn typed_key() -> impl Strategy<Value = usize> {
    0..TYPED
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![0..5u32, any::<u32>()]
}

fn dkey() -> impl Strategy<Value = DKey> {
    prop_oneof![
        (0..3usize).prop_map(DKey::Str),
        (0..3usize).prop_map(DKey::Owned)
    ]
}

fn dval() -> impl Strategy<Value = DVal> {
    prop_oneof![
        (0..5u32).prop_map(DVal::Num),
        "[a-z]{0,3}".prop_map(DVal::Text)
    ]
}

fn vtype() -> impl Strategy<Value = VType> {
    prop_oneof![Just(VType::Num), Just(VType::Text)]
}

fn flat_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (typed_key(), value()).prop_map(|(k, v)| Op::Set(k, v)),
        2 => (typed_key(), value()).prop_map(|(k, v)| Op::Replace(k, v)),
        2 => typed_key().prop_map(Op::Take),
        3 => typed_key().prop_map(Op::Get),
        2 => typed_key().prop_map(Op::With),
        2 => (typed_key(), value()).prop_map(|(k, v)| Op::WithMut(k, v)),
        1 => typed_key().prop_map(Op::IsSet),
        3 => (dkey(), dval()).prop_map(|(k, v)| Op::DSet(k, v)),
        3 => (dkey(), vtype()).prop_map(|(k, t)| Op::DGet(k, t)),
        1 => (dkey(), vtype()).prop_map(|(k, t)| Op::DWith(k, t)),
        2 => dkey().prop_map(Op::DRemove),
        2 => (dkey(), vtype()).prop_map(|(k, t)| Op::DTake(k, t)),
        1 => Just(Op::Reset),
        1 => Just(Op::Child),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => flat_op(),
        1 => (typed_key(), value(), prop::collection::vec(flat_op(), 0..8))
            .prop_map(|(k, v, inner)| Op::Scope(k, v, inner)),
    ]
}

/// Applies `ops` to tasklocal and to the model in the current owner, comparing after
/// every operation.
fn check(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let actual = apply(op);
        prop_assert_eq!(
            &actual,
            &expected,
            "operation {} ({:?}) of {:?}",
            i,
            op,
            ops
        );
        // Every key agrees after every operation, read without side effects.
        for k in 0..TYPED {
            prop_assert_eq!(
                t_is_set(k),
                model.typed[k].is_some(),
                "is_set of key {} after {:?}",
                k,
                op
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_a_hashmap_model(ops in prop::collection::vec(op(), 1..80)) {
        Snapshot::empty().run(|| check(&ops))?;
    }

    /// The same on a thread's own storage (a fresh thread per case), which takes other
    /// fast paths: with the `tokio` feature, after asking tokio; without it, the same
    /// inlined path as a `Task`'s.
    #[test]
    fn operations_match_a_hashmap_model_on_a_thread(ops in prop::collection::vec(op(), 1..80)) {
        std::thread::spawn(move || check(&ops))
            .join()
            .expect("the thread does not panic")?;
    }
}
