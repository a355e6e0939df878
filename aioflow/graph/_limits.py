"""The bounds of loading: what would let a document take unbounded time, memory or stack.

Each is refused with a message naming the bound:

- values nested more than `_MAX_NESTING` lists or objects deep, or that
  contain themselves (copying, comparing and pickling recurse once per level),
  and values whose shared parts expand them beyond `_MAX_SHARED_EXPANSION`
  items (comparing two copies walks them expanded);
- positional input indices beyond `_MAX_POSITION` (a task call holds one
  argument per index below the largest);
- node ids of more than `_MAX_ID_PARTS` parts, and int ids beyond 64 bits
  (`_MAX_INT_ID`);
- subgraphs nested more than `_MAX_SUBGRAPH_DEPTH` levels; more than
  `_MAX_SUBGRAPHS` subgraphs, or `_MAX_EXPANSION` nodes and links, made by
  expansion (a finite include tree that includes a file twice at each level
  doubles at every level).

`_values` enforces the bounds on values and ids, `_subgraphs` and `_report`
those on expansion. Did-you-mean suggestions are bounded too
(`_MAX_SUGGESTIONS`, `_SUGGESTION_LENGTH`), without a message.

Constants only: this module imports nothing.
"""

from __future__ import annotations

# Values nested deeper are refused: copying, comparing, printing and pickling
# them recurse once per level, and Python's stack holds about 1,000 frames.
_MAX_NESTING = 100
# The largest positional input index. A call gets one argument per index up
# to the largest (the gaps are MISSING), so an index sizes an allocation;
# 65,536 arguments is far beyond any signature, and within what a command
# line (script tasks) can hold.
_MAX_POSITION = 2**16 - 1
_POSITION_DIGITS = len(str(_MAX_POSITION))
# The most items a value may hold once its shared parts are expanded (a YAML
# alias "bomb" is small as written and copied once, but comparing it walks it
# whole). Values without shared parts have no bound but the document's size.
_MAX_SHARED_EXPANSION = 1_000_000
# A node id holds at most this many strings and ints, however nested.
_MAX_ID_PARTS = 1000
# Int ids (and graph ids) lie within 64 bits: they are printed in labels and
# messages, and Python refuses to print an int of 4,300 digits or more.
_MAX_INT_ID = 2**63
# Subgraphs nested deeper are refused (each level is a few stack frames).
_MAX_SUBGRAPH_DEPTH = 64
# The most nodes and links that expansion may copy or make: a node or link is
# copied into the graph of each level of subgraphs it is in; each link an
# alias fans out to, and each error link wired to one of several handlers,
# is made. And the most subgraphs it may expand. Either bound takes a few
# seconds to reach; what reaches one (a file that includes another twice, at
# each of 20 levels) would otherwise never finish.
_MAX_EXPANSION = 2_000_000
_MAX_SUBGRAPHS = 10_000
# Did-you-mean suggestions per load: each scans every known id, so a
# document with a hundred thousand bad links must not ask for each.
_MAX_SUGGESTIONS = 20
_SUGGESTION_LENGTH = 200
