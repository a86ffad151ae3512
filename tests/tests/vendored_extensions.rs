//! actix-http's own unit tests of `Extensions`, run against the vendored crate, whose
//! `Extensions` is a list instead of a hash map (vendor/README.md); its unit tests are not
//! built in this workspace (its dev-dependencies are left out). Then what rondo adds: entries
//! of many types, replaced, removed and found again.

use actix_http::Extensions;

#[test]
fn test_remove() {
    let mut map = Extensions::new();

    map.insert::<i8>(123);
    assert!(map.get::<i8>().is_some());

    map.remove::<i8>();
    assert!(map.get::<i8>().is_none());
}

#[test]
fn test_clear() {
    let mut map = Extensions::new();

    map.insert::<i8>(8);
    map.insert::<i16>(16);
    map.insert::<i32>(32);

    assert!(map.contains::<i8>());
    assert!(map.contains::<i16>());
    assert!(map.contains::<i32>());

    map.clear();

    assert!(!map.contains::<i8>());
    assert!(!map.contains::<i16>());
    assert!(!map.contains::<i32>());

    map.insert::<i8>(10);
    assert_eq!(*map.get::<i8>().unwrap(), 10);
}

#[test]
fn test_integers() {
    static A: u32 = 8;

    let mut map = Extensions::new();

    map.insert::<i8>(8);
    map.insert::<i16>(16);
    map.insert::<i32>(32);
    map.insert::<i64>(64);
    map.insert::<i128>(128);
    map.insert::<u8>(8);
    map.insert::<u16>(16);
    map.insert::<u32>(32);
    map.insert::<u64>(64);
    map.insert::<u128>(128);
    map.insert::<&'static u32>(&A);
    assert!(map.get::<i8>().is_some());
    assert!(map.get::<i16>().is_some());
    assert!(map.get::<i32>().is_some());
    assert!(map.get::<i64>().is_some());
    assert!(map.get::<i128>().is_some());
    assert!(map.get::<u8>().is_some());
    assert!(map.get::<u16>().is_some());
    assert!(map.get::<u32>().is_some());
    assert!(map.get::<u64>().is_some());
    assert!(map.get::<u128>().is_some());
    assert!(map.get::<&'static u32>().is_some());
}

#[test]
fn test_composition() {
    struct Magi<T>(pub T);

    struct Madoka {
        pub god: bool,
    }

    struct Homura {
        pub attempts: usize,
    }

    struct Mami {
        pub guns: usize,
    }

    let mut map = Extensions::new();

    map.insert(Magi(Madoka { god: false }));
    map.insert(Magi(Homura { attempts: 0 }));
    map.insert(Magi(Mami { guns: 999 }));

    assert!(!map.get::<Magi<Madoka>>().unwrap().0.god);
    assert_eq!(0, map.get::<Magi<Homura>>().unwrap().0.attempts);
    assert_eq!(999, map.get::<Magi<Mami>>().unwrap().0.guns);
}

#[test]
fn test_extensions() {
    #[derive(Debug, PartialEq)]
    struct MyType(i32);

    let mut extensions = Extensions::new();

    extensions.insert(5i32);
    extensions.insert(MyType(10));

    assert_eq!(extensions.get(), Some(&5i32));
    assert_eq!(extensions.get_mut(), Some(&mut 5i32));

    assert_eq!(extensions.remove::<i32>(), Some(5i32));
    assert!(extensions.get::<i32>().is_none());

    assert_eq!(extensions.get::<bool>(), None);
    assert_eq!(extensions.get(), Some(&MyType(10)));
}

#[test]
fn test_extend() {
    #[derive(Debug, PartialEq)]
    struct MyType(i32);

    let mut extensions = Extensions::new();

    extensions.insert(5i32);
    extensions.insert(MyType(10));

    let mut other = Extensions::new();

    other.insert(15i32);
    other.insert(20u8);

    extensions.extend(other);

    assert_eq!(extensions.get(), Some(&15i32));
    assert_eq!(extensions.get_mut(), Some(&mut 15i32));

    assert_eq!(extensions.remove::<i32>(), Some(15i32));
    assert!(extensions.get::<i32>().is_none());

    assert_eq!(extensions.get::<bool>(), None);
    assert_eq!(extensions.get(), Some(&MyType(10)));

    assert_eq!(extensions.get(), Some(&20u8));
    assert_eq!(extensions.get_mut(), Some(&mut 20u8));
}

#[test]
fn many_entries_replaced_removed_and_found_again() {
    #[derive(Debug, PartialEq)]
    struct Tag<const N: usize>(u32);

    let mut map = Extensions::new();
    assert_eq!(map.insert(Tag::<0>(0)), None);
    assert_eq!(map.insert(Tag::<1>(1)), None);
    assert_eq!(map.insert(Tag::<2>(2)), None);
    assert_eq!(map.insert(Tag::<3>(3)), None);
    assert_eq!(map.insert(Tag::<4>(4)), None);
    assert_eq!(map.insert(Tag::<2>(20)), Some(Tag::<2>(2)));
    assert_eq!(map.remove::<Tag<0>>(), Some(Tag::<0>(0)));
    assert_eq!(map.remove::<Tag<0>>(), None);
    assert_eq!(map.get::<Tag<1>>(), Some(&Tag::<1>(1)));
    assert_eq!(map.get::<Tag<2>>(), Some(&Tag::<2>(20)));
    assert_eq!(map.get::<Tag<3>>(), Some(&Tag::<3>(3)));
    assert_eq!(map.get::<Tag<4>>(), Some(&Tag::<4>(4)));
    map.get_or_insert_with(|| Tag::<5>(5)).0 += 1;
    map.get_or_insert_with(|| Tag::<5>(50)).0 += 1;
    assert_eq!(map.get::<Tag<5>>(), Some(&Tag::<5>(7)));
    *map.get_or_insert(Tag::<3>(30)) = Tag::<3>(33);
    assert_eq!(map.get::<Tag<3>>(), Some(&Tag::<3>(33)));
    assert!(!map.contains::<Tag<0>>());
    map.clear();
    assert!(!map.contains::<Tag<1>>());
    assert_eq!(map.insert(Tag::<1>(11)), None);
    assert_eq!(map.get::<Tag<1>>(), Some(&Tag::<1>(11)));
}
