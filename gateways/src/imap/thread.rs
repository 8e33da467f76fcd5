//! THREAD (RFC 5256): ORDEREDSUBJECT (messages grouped by base subject) and REFERENCES
//! (the conversation tree from Message-ID, References and In-Reply-To, after Jamie
//! Zawinski's algorithm as RFC 5256 3 gives it), rendered as THREAD responses. Pure.

use std::collections::HashMap;

use super::sort::Sortable;

/// A node of a thread: a message, or (at the top only) an empty node holding threads
/// that share a missing parent.
///
/// A conversation may be thousands of replies deep (References are the senders' to
/// write), so nothing here walks a thread by recursion: the IMAP session runs on a tokio
/// worker's 2 MiB stack, and overflowing it kills the whole process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Index into the messages threaded.
    pub message: Option<usize>,
    pub children: Vec<Node>,
}

impl Drop for Node {
    /// Takes the tree apart a level at a time (dropped as it is, each level of nesting
    /// would take a stack frame).
    fn drop(&mut self) {
        let mut below = std::mem::take(&mut self.children);
        while let Some(mut node) = below.pop() {
            below.append(&mut node.children);
        }
    }
}

/// ORDEREDSUBJECT: one thread per base subject, its first message (by date) the parent of
/// the others; threads in the order of their first messages.
pub fn ordered_subject(messages: &[Sortable]) -> Vec<Node> {
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by_key(|&i| (messages[i].sent_ms, messages[i].seq));
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for i in order {
        match groups.iter_mut().find(|(subject, _)| *subject == messages[i].subject) {
            Some((_, members)) => members.push(i),
            None => groups.push((messages[i].subject.clone(), vec![i])),
        }
    }
    groups
        .into_iter()
        .map(|(_, members)| Node {
            message: Some(members[0]),
            children: members[1..].iter().map(|&i| Node { message: Some(i), children: Vec::new() }).collect(),
        })
        .collect()
}

/// The containers of the REFERENCES algorithm, by index.
#[derive(Default)]
struct Container {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Arena(Vec<Container>);

impl Arena {
    fn new_container(&mut self) -> usize {
        self.0.push(Container::default());
        self.0.len() - 1
    }

    /// Whether `ancestor` is `node` or above it.
    fn is_ancestor(&self, ancestor: usize, node: usize) -> bool {
        let mut at = Some(node);
        while let Some(current) = at {
            if current == ancestor {
                return true;
            }
            at = self.0[current].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(parent) = self.0[child].parent.take() {
            self.0[parent].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.0[child].parent = Some(parent);
        self.0[parent].children.push(child);
    }

    /// The containers of the trees below `roots`, each after all of its descendants.
    fn descendants_first(&self, roots: &[usize]) -> Vec<usize> {
        let mut order = Vec::new();
        let mut stack = roots.to_vec();
        while let Some(c) = stack.pop() {
            order.push(c);
            stack.extend_from_slice(&self.0[c].children);
        }
        order.reverse();
        order
    }
}

/// REFERENCES: conversations by their References and In-Reply-To headers, then threads
/// with one base subject merged (RFC 5256 3, steps 1 to 6).
pub fn references(messages: &[Sortable]) -> Vec<Node> {
    let mut arena = Arena(Vec::new());
    let mut by_id: HashMap<String, usize> = HashMap::new();
    // Step 1: a container per message id, parents from the reference chains.
    for (index, message) in messages.iter().enumerate() {
        let known = message.message_id.as_ref().and_then(|id| by_id.get(id).copied());
        let container = match known {
            Some(c) if arena.0[c].message.is_none() => c,
            // No id, or an id seen on another message already: a container of its own.
            _ => {
                let c = arena.new_container();
                if let Some(id) = &message.message_id
                    && known.is_none()
                {
                    by_id.insert(id.clone(), c);
                }
                c
            }
        };
        arena.0[container].message = Some(index);
        let mut previous: Option<usize> = None;
        for reference in &message.references {
            let current = match by_id.get(reference) {
                Some(&c) => c,
                None => {
                    let c = arena.new_container();
                    by_id.insert(reference.clone(), c);
                    c
                }
            };
            if let Some(parent) = previous
                && arena.0[current].parent.is_none()
                && !arena.is_ancestor(current, parent)
            {
                arena.link(parent, current);
            }
            previous = Some(current);
        }
        // The message's own References are the authority on its parent.
        arena.unlink(container);
        if let Some(parent) = previous
            && !arena.is_ancestor(container, parent)
        {
            arena.link(parent, container);
        }
    }
    // Steps 2 to 4: the root set, with empty containers pruned or promoted.
    let roots: Vec<usize> = (0..arena.0.len()).filter(|&c| arena.0[c].parent.is_none()).collect();
    let mut roots = prune(&mut arena, &roots);
    for &root in &roots {
        arena.0[root].parent = None;
    }
    // Step 5: threads with the same base subject are one conversation.
    merge_by_subject(&mut arena, &mut roots, messages);
    // Step 6: siblings, and the threads, by date.
    sort_by_date(&mut arena, &mut roots, messages);
    nodes(&arena, &roots)
}

/// Step 4 for the trees below `roots`: an empty container is dropped, or replaced by its
/// children (at the top only when it has one child). Returns what stands in the roots'
/// places afterwards.
fn prune(arena: &mut Arena, roots: &[usize]) -> Vec<usize> {
    // What stands at each container's place once the tree below it is pruned.
    let mut standing: Vec<Vec<usize>> = vec![Vec::new(); arena.0.len()];
    for c in arena.descendants_first(roots) {
        let children = std::mem::take(&mut arena.0[c].children);
        let kept: Vec<usize> = children.into_iter().flat_map(|child| std::mem::take(&mut standing[child])).collect();
        for &child in &kept {
            arena.0[child].parent = Some(c);
        }
        // A root has no parent; the parents of the others are linked only after them.
        let at_root = arena.0[c].parent.is_none();
        arena.0[c].children = kept.clone();
        standing[c] = if arena.0[c].message.is_none() && (kept.is_empty() || !at_root || kept.len() == 1) {
            kept
        } else {
            vec![c]
        };
    }
    roots.iter().flat_map(|&root| std::mem::take(&mut standing[root])).collect()
}

fn subject_of<'m>(arena: &Arena, c: usize, messages: &'m [Sortable]) -> Option<&'m Sortable> {
    let message = arena.0[c].message.or_else(|| arena.0[c].children.first().and_then(|&k| arena.0[k].message))?;
    Some(&messages[message])
}

fn merge_by_subject(arena: &mut Arena, roots: &mut Vec<usize>, messages: &[Sortable]) {
    let mut table: HashMap<String, usize> = HashMap::new();
    for &root in roots.iter() {
        let Some(message) = subject_of(arena, root, messages).filter(|m| !m.subject.is_empty()) else { continue };
        let better = match table.get(&message.subject) {
            None => true,
            Some(&old) => {
                let old_is_reply = arena.0[old].message.is_some_and(|m| messages[m].is_reply);
                (arena.0[root].message.is_none() && arena.0[old].message.is_some())
                    || (old_is_reply && arena.0[root].message.is_some_and(|m| !messages[m].is_reply))
            }
        };
        if better {
            table.insert(message.subject.clone(), root);
        }
    }
    let mut result: Vec<usize> = Vec::new();
    for &root in roots.iter() {
        // Merged below another thread already.
        if arena.0[root].parent.is_some() {
            continue;
        }
        let subject = subject_of(arena, root, messages).map(|m| m.subject.clone()).unwrap_or_default();
        let Some(&kept) = table.get(&subject).filter(|_| !subject.is_empty()) else {
            result.push(root);
            continue;
        };
        if kept == root {
            if !result.contains(&root) {
                result.push(root);
            }
            continue;
        }
        let (kept_empty, root_empty) = (arena.0[kept].message.is_none(), arena.0[root].message.is_none());
        let is_reply = |c: usize| arena.0[c].message.is_some_and(|m| messages[m].is_reply);
        if kept_empty && root_empty {
            for child in std::mem::take(&mut arena.0[root].children) {
                arena.link(kept, child);
            }
        } else if kept_empty || (!is_reply(kept) && is_reply(root)) {
            arena.link(kept, root);
        } else if root_empty || (is_reply(kept) && !is_reply(root)) {
            // The other way round: the kept thread goes below this one, which takes its place.
            arena.link(root, kept);
            table.insert(subject, root);
            result.retain(|&c| c != kept);
            result.push(root);
        } else {
            let both = arena.new_container();
            arena.link(both, kept);
            arena.link(both, root);
            table.insert(subject, both);
            result.retain(|&c| c != kept);
            result.push(both);
        }
    }
    *roots = result;
}

/// The trees below `roots` as nodes.
fn nodes(arena: &Arena, roots: &[usize]) -> Vec<Node> {
    let mut built: Vec<Option<Node>> = (0..arena.0.len()).map(|_| None).collect();
    for c in arena.descendants_first(roots) {
        let children = arena.0[c].children.iter().map(|&k| built[k].take().expect("children come first")).collect();
        built[c] = Some(Node { message: arena.0[c].message, children });
    }
    roots.iter().map(|&root| built[root].take().expect("each root is built")).collect()
}

/// Siblings in the order of their dates, and the threads too: a container's date is its
/// message's, or (an empty one) its first child's.
fn sort_by_date(arena: &mut Arena, roots: &mut [usize], messages: &[Sortable]) {
    let mut date = vec![(i64::MAX, u32::MAX); arena.0.len()];
    for c in arena.descendants_first(roots) {
        let mut children = std::mem::take(&mut arena.0[c].children);
        children.sort_by_key(|&k| date[k]);
        date[c] = match arena.0[c].message {
            Some(m) => (messages[m].sent_ms, messages[m].seq),
            None => children.first().map_or((i64::MAX, u32::MAX), |&k| date[k]),
        };
        arena.0[c].children = children;
    }
    roots.sort_by_key(|&root| date[root]);
}

/// The THREAD response's data, numbering each message with `number`:
/// `(2)(3 6 (4 23)(44 7 96))`. A message's one reply follows it in the same list; several
/// replies are a list each.
pub fn render(threads: &[Node], messages: &[Sortable], number: impl Fn(&Sortable) -> u32) -> String {
    enum Step<'n> {
        Node(&'n Node),
        Text(&'static str),
    }
    /// Each of `children` in parentheses, in order.
    fn nested<'n>(steps: &mut Vec<Step<'n>>, children: &'n [Node]) {
        for child in children.iter().rev() {
            steps.extend([Step::Text(")"), Step::Node(child), Step::Text("(")]);
        }
    }
    let mut out = String::new();
    // What is left to write, the next step last.
    let mut steps: Vec<Step<'_>> = Vec::new();
    nested(&mut steps, threads);
    while let Some(step) = steps.pop() {
        let node = match step {
            Step::Text(text) => {
                out.push_str(text);
                continue;
            }
            Step::Node(node) => node,
        };
        if let Some(m) = node.message {
            out.push_str(&number(&messages[m]).to_string());
        }
        match (node.message, node.children.as_slice()) {
            (None, children) => nested(&mut steps, children),
            (Some(_), []) => {}
            (Some(_), [only]) => steps.extend([Step::Node(only), Step::Text(" ")]),
            (Some(_), children) => {
                nested(&mut steps, children);
                steps.push(Step::Text(" "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::sort::base_subject;

    fn message(seq: u32, minute: i64, subject: &str, id: &str, references: &[&str]) -> Sortable {
        let (subject, is_reply) = base_subject(subject);
        Sortable {
            seq,
            uid: seq,
            sent_ms: minute * 60_000,
            subject,
            is_reply,
            message_id: (!id.is_empty()).then(|| id.to_string()),
            references: references.iter().map(|r| r.to_string()).collect(),
            ..Sortable::default()
        }
    }

    fn seq(m: &Sortable) -> u32 {
        m.seq
    }

    #[test]
    fn ordered_subject_groups_by_base_subject_in_date_order() {
        let messages = [
            message(1, 5, "Budget", "", &[]),
            message(2, 1, "Lunch", "", &[]),
            message(3, 7, "Re: Budget", "", &[]),
            message(4, 9, "RE: budget", "", &[]),
            message(5, 8, "Re: Lunch", "", &[]),
        ];
        assert_eq!(render(&ordered_subject(&messages), &messages, seq), "(2 5)(1 (3)(4))");
    }

    #[test]
    fn references_build_the_conversation_tree() {
        let messages = [
            message(1, 1, "Budget", "<a>", &[]),
            message(2, 2, "Re: Budget", "<b>", &["<a>"]),
            message(3, 3, "Re: Budget", "<c>", &["<a>", "<b>"]),
            message(4, 4, "Re: Budget", "<d>", &["<a>"]),
            message(5, 5, "Lunch", "<e>", &[]),
            // A reply whose parent we never received: its sibling shares the missing parent.
            message(6, 6, "Re: Party", "<f>", &["<missing>"]),
            message(7, 7, "Re: Party", "<g>", &["<missing>"]),
            // No references, but the subject joins it to the budget thread.
            message(8, 8, "Re: Budget", "<h>", &[]),
        ];
        assert_eq!(render(&references(&messages), &messages, seq), "(1 (2 3)(4)(8))(5)((6)(7))");
    }

    #[test]
    fn loops_and_duplicate_ids_do_not_break_threading() {
        let messages =
            [message(1, 1, "A", "<a>", &["<b>"]), message(2, 2, "B", "<b>", &["<a>"]), message(3, 3, "C", "<a>", &[])];
        let threads = references(&messages);
        let rendered = render(&threads, &messages, seq);
        for n in ["1", "2", "3"] {
            assert_eq!(rendered.matches(n).count(), 1, "every message exactly once: {rendered}");
        }
    }

    /// A conversation of 20,000 replies, each to the one before (anyone can send them):
    /// threaded and written out on a tokio worker's 2 MiB stack, where walking it by
    /// recursion overflowed and killed the process.
    #[test]
    fn a_conversation_thousands_deep_fits_a_worker_stack() {
        let messages: Vec<Sortable> = (0..20_000u32)
            .map(|i| {
                let parent = i.checked_sub(1).map(|p| format!("<{p}>"));
                let references: Vec<&str> = parent.iter().map(String::as_str).collect();
                message(i + 1, i64::from(i), "Re: Long", &format!("<{i}>"), &references)
            })
            .collect();
        let worker = std::thread::Builder::new().stack_size(2 * 1024 * 1024);
        let rendered = worker.spawn(move || render(&references(&messages), &messages, seq)).unwrap().join().unwrap();
        assert!(rendered.starts_with("(1 2 3 "), "{}", &rendered[..40]);
        assert!(rendered.ends_with(" 19999 20000)"), "one thread, in order");
    }
}
