// Internal: the one lock order of oasync. Every transaction that locks more
// than one of these takes them in this order, so no two of them can wait for
// each other in a cycle (no deadlock):
//
//   1. doc rows, sorted by (topic, doc_key) in bytewise ("C") order:
//        the sink (existing docs FOR UPDATE, then placeholders for new ones,
//        in the same order; see sink.cpp), purge's tombstone removal, topics
//        apply (the version-0 rows of the topics it removes);
//   2. topic rows, sorted by topic in bytewise order:
//        the sink (FOR NO KEY UPDATE, after its docs), topics apply (every
//        row FOR UPDATE, after those docs), purge (one topic per transaction),
//        reset-epoch (one topic), oasync.note_timeline (the sink's topics);
//   3. producer checkpoint rows, sorted by producer_id: the sink.
//
// Tables no transaction locks together with these (events, scope exits,
// consumers, epoch history) are written while holding the rows above, never
// before them. Sink::apply_within runs inside a caller's transaction: the
// caller must not hold doc or topic rows from before (nor run a second
// apply_within in it: that would take doc rows after topic rows, so it is
// refused).
#pragma once
