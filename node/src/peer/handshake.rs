//! What a listener decides from a new peer connection's Hello (pure): only a member of
//! this cluster, other than this node, holding that member's certificate, gets in; a
//! removed member holding its own certificate is told so, and refused.

use consensus::NodeId;

use crate::proto::peer::Hello;

/// Why a connection is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not (or not provably) a member: it is told nothing.
    Outsider(String),
    /// A member removed from the cluster, proven by its certificate: told it is removed.
    Removed(NodeId),
}

/// The node a Hello may speak for, or why the connection is refused. `admission` says
/// whether a node is a member (`Some(false)`) or a removed one (`Some(true)`); `holds`
/// whether the connection's certificate is that node's (always true without TLS).
pub fn admit(
    hello: &Hello,
    cluster_id: &str,
    this_node: NodeId,
    admission: impl Fn(NodeId) -> Option<bool>,
    holds: impl Fn(NodeId) -> bool,
) -> Result<NodeId, Refusal> {
    let node = hello.node_id;
    if hello.cluster_id != cluster_id {
        return Err(Refusal::Outsider(format!("it belongs to cluster '{}'", hello.cluster_id)));
    }
    if node == this_node {
        return Err(Refusal::Outsider(format!("it claims to be this node ({node})")));
    }
    let Some(removed) = admission(node) else {
        return Err(Refusal::Outsider(format!("node {node} is not a member")));
    };
    if !holds(node) {
        return Err(Refusal::Outsider(format!("its certificate is not node {node}'s")));
    }
    if removed {
        return Err(Refusal::Removed(node));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, node: NodeId) -> Hello {
        Hello { cluster_id: cluster.into(), node_id: node, removed: false }
    }

    #[test]
    fn only_a_member_with_its_own_certificate_gets_in() {
        let admission = |node| match node {
            1..=3 => Some(false),
            4 => Some(true),
            _ => None,
        };
        let holds = |node| node == 2 || node == 4;
        assert_eq!(admit(&hello("c", 2), "c", 1, admission, holds), Ok(2));
        let refused = |h: Hello| match admit(&h, "c", 1, admission, holds).unwrap_err() {
            Refusal::Outsider(why) => why,
            Refusal::Removed(node) => format!("removed {node}"),
        };
        assert!(refused(hello("other", 2)).contains("cluster 'other'"));
        assert!(refused(hello("c", 1)).contains("this node"));
        assert!(refused(hello("c", 9)).contains("not a member"));
        assert!(refused(hello("c", 3)).contains("certificate is not node 3's"), "node 2's certificate claiming 3");
        assert_eq!(refused(hello("c", 4)), "removed 4");
    }

    #[test]
    fn a_removed_node_is_told_only_when_its_certificate_proves_it() {
        let admission = |_| Some(true);
        let refusal = admit(&hello("c", 4), "c", 1, admission, |_| false).unwrap_err();
        assert!(matches!(refusal, Refusal::Outsider(_)), "{refusal:?}");
    }
}
