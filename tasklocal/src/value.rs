//! How one value is kept in a storage: small primitives inline, anything else boxed.
//!
//! Every typed key always holds values of its one type, but safe Rust still has to
//! check the type on each access. For a boxed value that check is a dynamic call
//! (`Any::type_id`), which costs more than the rest of a read together. Integers,
//! floats, `bool` and `char` are therefore kept inline as a [`Small`]: their type is
//! checked at compile time (the `TypeId` comparisons below fold to constants), and
//! setting one allocates nothing.

use std::any::Any;

macro_rules! small {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// A primitive value kept inline.
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum Small {
            $($variant($ty)),*
        }

        impl Small {
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
    };
}

small! {
    U8(u8), U16(u16), U32(u32), U64(u64), Usize(usize),
    I8(i8), I16(i16), I32(i32), I64(i64), Isize(isize),
    F32(f32), F64(f64), Bool(bool), Char(char), Unit(()),
}

/// A value of a non-inheritable key or a dynamic key.
pub(crate) enum Value {
    Small(Small),
    Boxed(Box<dyn Any + Send>),
}

impl Value {
    #[inline(always)]
    pub(crate) fn new<T: Send + 'static>(value: T) -> Value {
        match Small::new(value) {
            Ok(small) => Value::Small(small),
            Err(value) => Value::Boxed(Box::new(value)),
        }
    }

    #[inline(always)]
    pub(crate) fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        match self {
            Value::Small(small) => small.get(),
            Value::Boxed(boxed) => boxed.downcast_ref(),
        }
    }

    #[inline(always)]
    pub(crate) fn downcast_mut<T: 'static>(&mut self) -> Option<&mut T> {
        match self {
            Value::Small(small) => small.get_mut(),
            Value::Boxed(boxed) => boxed.downcast_mut(),
        }
    }

    #[inline(always)]
    pub(crate) fn is<T: 'static>(&self) -> bool {
        self.downcast_ref::<T>().is_some()
    }

    /// The value, if it is a `T`; else the value itself back.
    pub(crate) fn downcast<T: 'static>(self) -> Result<T, Value> {
        match self {
            Value::Small(small) => small.into_inner().ok_or(Value::Small(small)),
            Value::Boxed(boxed) => boxed.downcast().map(|b| *b).map_err(Value::Boxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_are_inline_and_typed() {
        assert!(matches!(Value::new(5u64), Value::Small(Small::U64(5))));
        assert!(matches!(Value::new('x'), Value::Small(Small::Char('x'))));
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
