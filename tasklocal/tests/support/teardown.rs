//! The end of an owner, observed: every value is a [`Counted`], whose creation and drop
//! are counted by the [`Probe`] of the owner that holds it, and whose drop is logged;
//! `populate*` give the current owner values and exit handlers, `assert_*_torn_down`
//! check what the teardown did.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tasklocal::{Local, Snapshot};

#[derive(Default)]
pub struct Probe {
    pub created: AtomicUsize,
    pub dropped: AtomicUsize,
    pub handlers: AtomicUsize,
    pub log: Mutex<Vec<String>>,
}

impl Probe {
    /// A probe with nothing counted yet.
    pub fn new() -> Arc<Probe> {
        Arc::default()
    }

    /// A new value named `name`, counted by this probe.
    pub fn value(self: &Arc<Self>, name: &'static str) -> Counted {
        self.created.fetch_add(1, Ordering::SeqCst);
        Counted {
            probe: self.clone(),
            name,
        }
    }

    /// Appends to the log.
    pub fn log(&self, entry: impl Into<String>) {
        self.log.lock().unwrap().push(entry.into());
    }

    /// The log so far.
    pub fn entries(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Values created and not dropped yet.
    pub fn alive(&self) -> usize {
        self.created.load(Ordering::SeqCst) - self.dropped.load(Ordering::SeqCst)
    }

    /// Exit handlers that ran.
    pub fn handlers(&self) -> usize {
        self.handlers.load(Ordering::SeqCst)
    }

    /// The owner that ran [`populate`] with this probe was torn down properly: both
    /// handlers ran once, last registered first, seeing every value; then every value
    /// was dropped, once.
    #[track_caller]
    pub fn assert_torn_down(&self) {
        let log = self.entries();
        assert!(log.len() >= 2, "handlers did not run: {log:?}");
        assert_eq!(
            log[..2],
            [
                "exit second: typed shared dynamic".to_string(),
                "exit first: typed shared dynamic".to_string()
            ],
            "handlers not FILO or values not readable in them: {log:?}"
        );
        let drops: HashSet<&str> = log[2..].iter().map(String::as_str).collect();
        assert_eq!(drops.len(), log.len() - 2, "a value dropped twice: {log:?}");
        assert_eq!(
            drops,
            HashSet::from(["drop typed", "drop shared", "drop dynamic"]),
            "{log:?}"
        );
        assert_eq!(self.handlers(), 2);
        assert_eq!(self.alive(), 0, "values leaked");
    }

    /// The owner is still alive: nothing ran, nothing was dropped.
    #[track_caller]
    pub fn assert_alive(&self) {
        assert_eq!(self.entries(), Vec::<String>::new());
        assert_eq!(self.handlers(), 0);
        assert_eq!(self.alive(), 3);
    }
}

/// A value whose creation and drop its probe counts.
pub struct Counted {
    probe: Arc<Probe>,
    pub name: &'static str,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.probe.value(self.name)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.probe.dropped.fetch_add(1, Ordering::SeqCst);
        self.probe.log(format!("drop {}", self.name));
    }
}

/// A non-inheritable key and an inheritable one, set by [`populate`].
pub static TYPED: Local<Counted> = Local::new();
pub static SHARED: Local<Counted> = Local::inheritable();

/// The name of a value, `-` for none.
pub fn name(value: Option<&Counted>) -> &'static str {
    value.map_or("-", |v| v.name)
}

/// The names of the values of `populate` visible now.
pub fn seen() -> String {
    format!(
        "{} {} {}",
        TYPED.with(name),
        SHARED.with(name),
        tasklocal::with(&"dyn", name)
    )
}

/// Gives the current owner three values and two exit handlers.
pub fn populate(probe: &Arc<Probe>) {
    TYPED.set(probe.value("typed"));
    SHARED.set(probe.value("shared"));
    tasklocal::set("dyn", probe.value("dynamic"));
    for label in ["first", "second"] {
        let probe = probe.clone();
        tasklocal::at_exit(move || {
            probe.handlers.fetch_add(1, Ordering::SeqCst);
            probe.log(format!("exit {label}: {}", seen()));
        });
    }
}

/// A value whose `Drop` uses the API: reads, sets a value, registers a handler.
pub struct Busy(pub Arc<Probe>);

impl Drop for Busy {
    fn drop(&mut self) {
        let probe = self.0.clone();
        probe.log(format!("busy drop sees: {}", seen()));
        let _ = tasklocal::id();
        let _ = Snapshot::capture();
        tasklocal::set("set by drop", probe.value("set by drop"));
        let p = probe.clone();
        tasklocal::at_exit(move || p.log("handler registered by drop"));
    }
}

/// Holds a [`Busy`].
pub static BUSY: Local<Busy> = Local::new();

/// Handlers and a `Drop` that use the API during teardown.
pub fn populate_busy(probe: &Arc<Probe>) {
    TYPED.set(probe.value("typed"));
    BUSY.set(Busy(probe.clone()));
    let p = probe.clone();
    tasklocal::at_exit(move || {
        p.log(format!("handler sees: {}", seen()));
        let _ = tasklocal::id();
        let _ = Snapshot::capture();
        // Replaces a value: the old one is dropped now, the new one later.
        TYPED.set(p.value("set by handler"));
        SHARED.set(p.value("shared by handler"));
        tasklocal::set("dyn", p.value("dynamic by handler"));
        let q = p.clone();
        tasklocal::at_exit(move || q.log(format!("nested handler sees: {}", seen())));
    });
}

/// The owner that ran [`populate_busy`] was torn down: what its handlers and `Drop`s
/// did during the teardown happened, in order, and nothing leaked.
#[track_caller]
pub fn assert_busy_torn_down(probe: &Probe) {
    let log = probe.entries();
    let expected_order = [
        "handler sees: typed - -",
        "drop typed",
        "nested handler sees: set by handler shared by handler dynamic by handler",
    ];
    let positions: Vec<_> = expected_order
        .iter()
        .map(|e| {
            log.iter()
                .position(|l| l == e)
                .unwrap_or_else(|| panic!("{e:?} missing: {log:?}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{log:?}");
    // The values are taken out together and then dropped: a `Drop` sees the others
    // already gone.
    for entry in [
        "busy drop sees: - - -",
        "handler registered by drop",
        "drop set by handler",
        "drop shared by handler",
        "drop dynamic by handler",
        "drop set by drop",
    ] {
        assert!(log.iter().any(|l| l == entry), "{entry:?} missing: {log:?}");
    }
    assert_eq!(probe.alive(), 0, "values leaked: {log:?}");
}

/// Its `Drop` panics, after counting itself as dropped.
#[derive(Clone)]
pub struct PanicsOnDrop(pub Counted);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop of {} fails", self.0.name);
    }
}

/// Holds a [`PanicsOnDrop`].
pub static FAILING: Local<PanicsOnDrop> = Local::new();
/// The same, inheritable: dropped with the owner's inheritable values.
pub static FAILING_SHARED: Local<PanicsOnDrop> = Local::inheritable();

/// [`populate`], plus values whose `Drop` panics and a handler that panics.
pub fn populate_failing(probe: &Arc<Probe>) {
    populate(probe);
    FAILING.set(PanicsOnDrop(probe.value("failing")));
    FAILING_SHARED.set(PanicsOnDrop(probe.value("failing shared")));
    tasklocal::set(1u8, PanicsOnDrop(probe.value("failing dynamic")));
    let p = probe.clone();
    tasklocal::at_exit(move || {
        p.handlers.fetch_add(1, Ordering::SeqCst);
        panic!("handler fails")
    });
}

/// The owner that ran [`populate_failing`] was torn down completely despite the panics.
#[track_caller]
pub fn assert_failing_torn_down(probe: &Probe) {
    let log = probe.entries();
    // The panicking handler ran first (last registered), then both others.
    assert_eq!(probe.handlers(), 3, "{log:?}");
    assert_eq!(log[0], "exit second: typed shared dynamic");
    assert_eq!(log[1], "exit first: typed shared dynamic");
    assert_eq!(probe.alive(), 0, "values leaked: {log:?}");
}
