//! A record's field registers by name. A case has a handful of fields: one sorted vector, one
//! allocation, searched in a cache line or two and freed at once. A record with many distinct
//! names (a hostile member can push a hundred thousand into one case) moves into a B-tree, so
//! each new name costs a logarithmic insert instead of shifting every name after it: a sorted
//! vector made such a push quadratic, holding the writer for minutes.

use std::collections::BTreeMap;

use crate::model::operation::FieldName;

/// Names a record holds in its sorted vector before it moves into a B-tree.
const SMALL_FIELDS_MAX: usize = 64;

type Small<V> = litemap::LiteMap<FieldName, V>;
type Large<V> = BTreeMap<FieldName, V>;

/// Values (a record's field registers) by field name, in name order.
#[derive(Clone, Debug)]
pub struct FieldMap<V>(Repr<V>);

#[derive(Clone, Debug)]
enum Repr<V> {
    Small(Small<V>),
    Large(Large<V>),
}

impl<V> Default for FieldMap<V> {
    fn default() -> Self {
        FieldMap(Repr::Small(Small::new()))
    }
}

/// Equal when they hold the same values by the same names, however they are held.
impl<V: PartialEq> PartialEq for FieldMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<V: Eq> Eq for FieldMap<V> {}

impl<V: Default> FieldMap<V> {
    /// The value of `name`, a new default one if the map has none.
    pub fn entry_or_default(&mut self, name: FieldName) -> &mut V {
        if let Repr::Small(small) = &self.0 {
            if small.len() >= SMALL_FIELDS_MAX && !small.contains_key(name.as_str()) {
                self.grow();
            }
        }
        match &mut self.0 {
            Repr::Small(small) => small.entry(name).or_default(),
            Repr::Large(large) => large.entry(name).or_default(),
        }
    }

    /// Sets the value of `name`; returns the one it replaces, if any.
    pub fn insert(&mut self, name: FieldName, value: V) -> Option<V> {
        match &mut self.0 {
            Repr::Small(small) if small.len() < SMALL_FIELDS_MAX || small.contains_key(name.as_str()) => {
                small.insert(name, value)
            }
            Repr::Small(_) => {
                self.grow();
                self.insert(name, value)
            }
            Repr::Large(large) => large.insert(name, value),
        }
    }
}

impl<V> FieldMap<V> {
    fn grow(&mut self) {
        if let Repr::Small(small) = &mut self.0 {
            let large: Large<V> = std::mem::take(small).into_iter().collect();
            self.0 = Repr::Large(large);
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        match &self.0 {
            Repr::Small(small) => small.get(name),
            Repr::Large(large) => large.get(name),
        }
    }

    /// Takes the value of `name` out.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        match &mut self.0 {
            Repr::Small(small) => small.remove(name),
            Repr::Large(large) => large.remove(name),
        }
    }

    /// How many names the record holds.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Small(small) => small.len(),
            Repr::Large(large) => large.len(),
        }
    }

    /// Whether the record holds no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names and values, in name order.
    pub fn iter(&self) -> Iter<'_, V> {
        match &self.0 {
            Repr::Small(small) => Iter::Small(small.iter()),
            Repr::Large(large) => Iter::Large(large.iter()),
        }
    }

    /// Values, in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, register)| register)
    }
}

/// [`FieldMap::iter`]'s iterator.
pub enum Iter<'a, V> {
    /// Over a sorted vector.
    Small(<&'a Small<V> as IntoIterator>::IntoIter),
    /// Over a B-tree.
    Large(std::collections::btree_map::Iter<'a, FieldName, V>),
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a FieldName, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(iter) => iter.next(),
            Iter::Large(iter) => iter.next(),
        }
    }
}

impl<'a, V> IntoIterator for &'a FieldMap<V> {
    type Item = (&'a FieldName, &'a V);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<V: 'static> IntoIterator for FieldMap<V> {
    type Item = (FieldName, V);
    type IntoIter = Box<dyn Iterator<Item = (FieldName, V)>>;

    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Repr::Small(small) => Box::new(small.into_iter()),
            Repr::Large(large) => Box::new(large.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_names_move_into_a_tree_and_stay_in_name_order() {
        let mut map = FieldMap::default();
        let names: Vec<FieldName> = (0..1000u64).rev().map(|n| format!("field {n:04}").into()).collect();
        for (n, name) in names.iter().enumerate() {
            *map.entry_or_default(name.clone()) += n as u64 + 1;
        }
        assert!(matches!(map.0, Repr::Large(_)));
        assert_eq!(map.len(), 1000);
        let listed: Vec<&FieldName> = map.iter().map(|(name, _)| name).collect();
        let mut sorted = names.iter().collect::<Vec<_>>();
        sorted.sort();
        assert_eq!(listed, sorted);
        assert_eq!(map.get("field 0999"), Some(&1));
        assert_eq!(map.remove("field 0500"), Some(500));
        assert!(map.get("field 0500").is_none());
        assert_eq!(map.insert("field 0001".into(), 7), Some(999));
    }

    #[test]
    fn equality_ignores_how_the_names_are_held() {
        let mut small = FieldMap::default();
        let mut large = FieldMap::default();
        large.grow();
        for n in 0..10u64 {
            small.insert(format!("f{n}").into(), n);
            large.insert(format!("f{n}").into(), n);
        }
        assert_eq!(small, large);
        large.remove("f3");
        assert_ne!(small, large);
        let owned: Vec<(FieldName, u64)> = small.into_iter().collect();
        assert_eq!(owned.len(), 10);
    }
}
