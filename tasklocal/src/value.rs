//! How one value is kept in a storage: small primitives inline, anything else boxed.
//!
//! Every typed key always holds values of its one type, but safe Rust still has to
//! check the type on each access. For a boxed value that check is a dynamic call
//! (`Any::type_id`), which costs more than the rest of a read together. Integers,
//! floats, `bool` and `char` are therefore kept inline — as a variant of [`Value`] of
//! their own in a cell, as a [`Small`] in an inheritable entry or in the key of a
//! dynamic key: their type is checked at compile time (the `TypeId` comparisons below
//! fold to constants), and setting one allocates nothing.

use std::any::Any;

macro_rules! small {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// A primitive value kept inline.
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Small {
            $($variant($ty)),*
        }

        impl Small {
            /// Whether values of `T` are kept as a `Small` (folds to a constant).
            #[inline(always)]
            pub(crate) fn fits<T: 'static>() -> bool {
                use std::any::TypeId;
                false $(|| TypeId::of::<T>() == TypeId::of::<$ty>())*
            }

            /// `value` as a `Small`, if `T` is one of the primitive types.
            #[inline(always)]
            pub(crate) fn new<T: 'static>(value: T) -> Result<Small, T> {
                $(
                    if let Some(v) = (&value as &dyn Any).downcast_ref::<$ty>() {
                        return Ok(Small::$variant(*v));
                    }
                )*
                Err(value)
            }

            /// A copy of `*value` as a `Small`, if `T` is one of the primitive types.
            #[inline(always)]
            pub(crate) fn of_ref<T: 'static>(value: &T) -> Option<Small> {
                $(
                    if let Some(v) = (value as &dyn Any).downcast_ref::<$ty>() {
                        return Some(Small::$variant(*v));
                    }
                )*
                None
            }

            /// The variant's number and the value's bits: equal for equal values of one
            /// type (floats by their bits).
            #[inline(always)]
            pub(crate) fn bits(&self) -> (u8, u64) {
                let mut tag = 0u8;
                $(
                    if let Small::$variant(v) = self {
                        return (tag, Bits::bits(*v));
                    }
                    tag += 1;
                )*
                (tag, 0)
            }

            /// The value, if it is a `T`.
            #[inline(always)]
            pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
                match self {
                    $(Small::$variant(v) => (v as &dyn Any).downcast_ref::<T>()),*
                }
            }

            /// The value, if it is a `T`.
            #[inline(always)]
            pub(crate) fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
                match self {
                    $(Small::$variant(v) => (v as &mut dyn Any).downcast_mut::<T>()),*
                }
            }

            /// The value, if it is a `T`.
            #[inline(always)]
            pub(crate) fn into_inner<T: 'static>(self) -> Option<T> {
                match self {
                    $(Small::$variant(v) => {
                        let mut v = Some(v);
                        (&mut v as &mut dyn Any).downcast_mut::<Option<T>>()?.take()
                    }),*
                }
            }
        }

        /// A value of a non-inheritable key or a dynamic key: a primitive inline, one
        /// variant per type, or anything else boxed.
        ///
        /// The primitives are `Value`'s own variants rather than one `Small` variant:
        /// then a read of a `u64` checks one tag, which also tells an empty cell
        /// (`Option<Value>`'s `None` is a tag value too) from a full one, where a
        /// nested `Small` needs two compares on the hottest path of the crate.
        pub(crate) enum Value {
            $($variant($ty),)*
            Boxed(Box<dyn Any + Send>),
        }

        impl Value {
            /// `small` as a `Value`.
            #[inline(always)]
            fn from_small(small: Small) -> Value {
                match small {
                    $(Small::$variant(v) => Value::$variant(v)),*
                }
            }

            /// The inline value, if it is a `T`.
            #[inline(always)]
            fn small_ref<T: 'static>(&self) -> Option<&T> {
                match self {
                    $(Value::$variant(v) => (v as &dyn Any).downcast_ref::<T>(),)*
                    Value::Boxed(_) => None,
                }
            }

            /// The inline value, if it is a `T`.
            #[inline(always)]
            fn small_mut<T: 'static>(&mut self) -> Option<&mut T> {
                match self {
                    $(Value::$variant(v) => (v as &mut dyn Any).downcast_mut::<T>(),)*
                    Value::Boxed(_) => None,
                }
            }

            /// A copy of the inline value, if it is a `T`.
            #[inline(always)]
            fn small_copy<T: 'static>(&self) -> Option<T> {
                match self {
                    $(Value::$variant(v) => {
                        let mut v = Some(*v);
                        (&mut v as &mut dyn Any).downcast_mut::<Option<T>>()?.take()
                    })*
                    Value::Boxed(_) => None,
                }
            }
        }
    };
}

small! {
    U8(u8), U16(u16), U32(u32), U64(u64), Usize(usize),
    I8(i8), I16(i16), I32(i32), I64(i64), Isize(isize),
    F32(f32), F64(f64), Bool(bool), Char(char), Unit(()),
}

/// The bits of a primitive value, for comparing and hashing keys.
trait Bits {
    fn bits(self) -> u64;
}

macro_rules! bits {
    ($($ty:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl Bits for $ty {
            #[inline(always)]
            fn bits(self) -> u64 {
                let $v = self;
                $e
            }
        })*
    };
}

bits! {
    u8 => |v| u64::from(v), u16 => |v| u64::from(v), u32 => |v| u64::from(v), u64 => |v| v,
    usize => |v| v as u64, i8 => |v| v as u64, i16 => |v| v as u64, i32 => |v| v as u64,
    i64 => |v| v as u64, isize => |v| v as u64, f32 => |v| u64::from(v.to_bits()),
    f64 => |v| v.to_bits(), bool => |v| u64::from(v), char => |v| u64::from(v), () => |_v| 0,
}

impl Value {
    #[inline(always)]
    pub(crate) fn new<T: Send + 'static>(value: T) -> Value {
        match Small::new(value) {
            Ok(small) => Value::from_small(small),
            Err(value) => Value::Boxed(Box::new(value)),
        }
    }

    // The type of a key's values never changes, so for a small type only the inline
    // form is looked at, and for any other only the boxed form: the compiler then sees
    // no dynamic call on the path of a small value.

    #[inline(always)]
    pub(crate) fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        match self {
            Value::Boxed(boxed) if !Small::fits::<T>() => boxed.downcast_ref(),
            _ if Small::fits::<T>() => self.small_ref(),
            _ => None,
        }
    }

    #[inline(always)]
    pub(crate) fn downcast_mut<T: 'static>(&mut self) -> Option<&mut T> {
        if Small::fits::<T>() {
            return self.small_mut();
        }
        match self {
            Value::Boxed(boxed) => boxed.downcast_mut(),
            _ => None,
        }
    }

    #[inline(always)]
    pub(crate) fn is<T: 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }

    /// The value, if it is a `T`; else the value itself back.
    pub(crate) fn downcast<T: 'static>(self) -> Result<T, Value> {
        match self {
            Value::Boxed(boxed) => boxed.downcast().map(|b| *b).map_err(Value::Boxed),
            small => small.small_copy().ok_or(small),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cell_is_a_tag_value() {
        // What lets a read check one tag: `None` lives in `Value`'s tag.
        use std::mem::size_of;
        assert_eq!(size_of::<Option<Value>>(), size_of::<Value>());
        assert_eq!(size_of::<Value>(), 24);
    }

    /// Every primitive type comes back as itself, through each accessor, and is seen
    /// by no other type: the variants the macro writes for `Value` match `Small`'s.
    #[test]
    fn every_primitive_round_trips_as_its_own_type() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + Send + 'static>(v: T) {
            let mut value = Value::new(v);
            assert!(!matches!(value, Value::Boxed(_)), "{v:?} is kept inline");
            assert_eq!(value.downcast_ref::<T>(), Some(&v));
            assert_eq!(value.downcast_mut::<T>().copied(), Some(v));
            // No other primitive type reads it (u64 and i64 stand for the others).
            if std::any::TypeId::of::<T>() != std::any::TypeId::of::<u64>() {
                assert_eq!(value.downcast_ref::<u64>(), None);
            }
            if std::any::TypeId::of::<T>() != std::any::TypeId::of::<i64>() {
                assert_eq!(value.downcast_ref::<i64>(), None);
            }
            assert_eq!(value.downcast_ref::<String>(), None);
            assert_eq!(value.downcast::<T>().ok(), Some(v));
        }
        check(7u8);
        check(7u16);
        check(7u32);
        check(7u64);
        check(7usize);
        check(-7i8);
        check(-7i16);
        check(-7i32);
        check(-7i64);
        check(-7isize);
        check(1.5f32);
        check(1.5f64);
        check(true);
        check('x');
        check(());
    }

    #[test]
    fn primitives_are_inline_and_typed() {
        assert!(matches!(Value::new(5u64), Value::U64(5)));
        assert!(matches!(Value::new('x'), Value::Char('x')));
        assert!(matches!(Value::new(String::new()), Value::Boxed(_)));
        let v = Value::new(5u64);
        assert_eq!(v.downcast_ref::<u64>(), Some(&5));
        assert_eq!(v.downcast_ref::<i64>(), None);
        assert_eq!(v.downcast_ref::<usize>(), None);
        let v = v.downcast::<u32>().unwrap_err();
        assert_eq!(v.downcast::<u64>().ok(), Some(5));
        let mut v = Value::new(String::from("a"));
        v.downcast_mut::<String>().unwrap().push('b');
        assert_eq!(v.downcast::<String>().ok().as_deref(), Some("ab"));
    }
}
