//! A node's id: its name in the config, in its certificate and in every
//! peer's tables. Cheap to clone (shared), compared and ordered as its
//! text, and usable wherever a `&str` is (it dereferences to one, and maps
//! keyed by ids can be looked up by `&str`).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: &str) -> NodeId {
        NodeId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for NodeId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> NodeId {
        NodeId::new(id)
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> NodeId {
        NodeId(Arc::from(id))
    }
}

impl From<&String> for NodeId {
    fn from(id: &String) -> NodeId {
        NodeId::new(id)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0.to_string()
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for NodeId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        String::deserialize(d).map(NodeId::from)
    }
}

impl PartialEq<NodeId> for str {
    fn eq(&self, other: &NodeId) -> bool {
        self == &*other.0
    }
}

impl PartialEq<NodeId> for &str {
    fn eq(&self, other: &NodeId) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<NodeId> for String {
    fn eq(&self, other: &NodeId) -> bool {
        **self == *other.0
    }
}

#[cfg(test)]
mod tests {
    use super::NodeId;
    use std::collections::BTreeMap;

    #[test]
    fn an_id_is_its_text_for_comparisons_maps_and_printing() {
        let a = NodeId::new("n1");
        assert_eq!(a, "n1");
        assert_eq!(a, String::from("n1"));
        assert!(NodeId::new("n10") > a, "ordered as text");
        let mut m = BTreeMap::new();
        m.insert(a.clone(), 1);
        assert_eq!(m.get("n1"), Some(&1), "looked up by &str");
        assert_eq!(format!("{a} {a:?}"), "n1 \"n1\"");
        assert_eq!(a.len(), 2, "a &str where one is wanted");
    }
}
