//! What a listener decides from a new peer connection's Hello (pure): only a member of
//! this cluster, other than this node, holding that member's certificate, gets in.

use consensus::NodeId;

use crate::proto::peer::Hello;

/// The node a Hello may speak for, or why the connection is refused. `holds` says
/// whether the connection's certificate is that node's (always true without TLS).
pub fn admit(
    hello: &Hello,
    cluster_id: &str,
    this_node: NodeId,
    members: &[NodeId],
    holds: impl Fn(NodeId) -> bool,
) -> Result<NodeId, String> {
    let node = hello.node_id;
    if hello.cluster_id != cluster_id {
        return Err(format!("it belongs to cluster '{}'", hello.cluster_id));
    }
    if node == this_node {
        return Err(format!("it claims to be this node ({node})"));
    }
    if !members.contains(&node) {
        return Err(format!("node {node} is not a member"));
    }
    if !holds(node) {
        return Err(format!("its certificate is not node {node}'s"));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, node: NodeId) -> Hello {
        Hello { cluster_id: cluster.into(), node_id: node }
    }

    #[test]
    fn only_a_member_with_its_own_certificate_gets_in() {
        let members = [1, 2, 3];
        let holds_2 = |node| node == 2;
        assert_eq!(admit(&hello("c", 2), "c", 1, &members, holds_2), Ok(2));
        let refused = |h: Hello| admit(&h, "c", 1, &members, holds_2).unwrap_err();
        assert!(refused(hello("other", 2)).contains("cluster 'other'"));
        assert!(refused(hello("c", 1)).contains("this node"));
        assert!(refused(hello("c", 9)).contains("not a member"));
        assert!(refused(hello("c", 3)).contains("certificate is not node 3's"), "node 2's certificate claiming 3");
    }
}
