"""The sparse lexical encoder: stable hashed terms, stemming, stop words, BM25 weights."""

from __future__ import annotations

import subprocess
import sys

from stores.sparse import document_vector, query_vector, stem, term_index, terms


def test_term_indices_are_the_same_in_another_process() -> None:
    words = ["postgresql", "kettle", "descal", "北京"]
    code = (
        "from stores.sparse import term_index; "
        f"print(','.join(str(term_index(w)) for w in {words!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ",".join(str(term_index(w)) for w in words)
    assert all(0 <= term_index(w) < 2**31 for w in words)


def test_terms_drop_stop_words_and_share_stems() -> None:
    assert terms("How do I rotate the keys?") == ["rotat", "key"]
    assert {stem(w) for w in ("rotate", "rotating", "rotated", "rotates")} == {"rotat"}
    assert stem("batteries") == "battery"
    assert stem("boxes") == "box"
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "POSTGRES")  # NFKC folds it
    assert terms(f"DATABASE_URL {fullwidth}") == ["databas", "url", "postgr"]


def test_document_weights_saturate_and_queries_weigh_each_term_once() -> None:
    once = document_vector("kettle")
    many = document_vector("kettle kettle kettle kettle kettle kettle")
    assert once.indices == many.indices == [term_index("kettl")]
    assert once.values[0] < many.values[0] < 2.2 * once.values[0]
    query = query_vector("kettle kettle scale")
    assert sorted(query.indices) == query.indices
    assert query.values == [1.0, 1.0]
    assert query_vector("the and of").indices == []
