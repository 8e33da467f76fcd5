//! `umsctl ca init|issue`: the cluster CA for mutual TLS between nodes, and a
//! certificate for each node (files only: no node is asked).

use std::path::Path;

use anyhow::bail;
use node::pki;
use serde_json::json;

use crate::client::print_json;

pub fn init(dir: &Path, cluster_id: &str, json_out: bool) -> anyhow::Result<()> {
    let (cert, key) = (dir.join(pki::CA_CERT_FILE), dir.join(pki::CA_KEY_FILE));
    if cert.exists() || key.exists() {
        bail!("{} already holds a CA; a new one would lock every node out of the others", dir.display());
    }
    pki::write(&pki::create_ca(cluster_id)?, &cert, &key)?;
    if json_out {
        print_json(&json!({ "cluster_id": cluster_id, "cert": cert, "key": key }));
    } else {
        println!(
            "created the CA of cluster {cluster_id}: {} (give to every node) and {}",
            cert.display(),
            key.display()
        );
        println!("keep {} offline; `umsctl ca issue` needs it for each new node", key.display());
    }
    Ok(())
}

pub fn issue(
    dir: &Path,
    cluster_id: &str,
    node_id: u64,
    out: &Path,
    force: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let (cert_file, key_file) = pki::node_files(node_id);
    let (cert, key) = (out.join(cert_file), out.join(key_file));
    if (cert.exists() || key.exists()) && !force {
        bail!("{} already exists; add --force to replace it (e.g. before it expires)", cert.display());
    }
    let issued = pki::issue_node(&pki::read_ca(dir)?, cluster_id, node_id)?;
    pki::write(&issued, &cert, &key)?;
    let name = pki::node_name(cluster_id, node_id);
    if json_out {
        print_json(&json!({ "node": node_id, "name": name, "cert": cert, "key": key }));
    } else {
        println!("issued {name}: {} and {}", cert.display(), key.display());
        println!(
            "in node {node_id}'s node.toml:\n[peer_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
            dir.join(pki::CA_CERT_FILE).display(),
            cert.display(),
            key.display()
        );
    }
    Ok(())
}
