"""Text corpora for language-model evaluators: offline sources, chunking, a disjoint train/validation split.

Nothing here imports torch: byte-level tokens come back as ``bytes``; other tokenizers live in the evaluator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path


def pydoc_topics() -> list[str]:
    """CPython's bundled help topics (``pydoc_data.topics``): ~460k characters of English prose and code,
    in every CPython install, so a study needs no download. One document per topic, in key order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def text_file_documents(path: str | Path) -> list[str]:
    """A UTF-8 text file as one document (split further by :func:`chunk_documents`)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"The 'text_file' option must name a readable text file. Got {str(path)!r} instead.")
    return [p.read_text(encoding="utf-8", errors="replace")]


def dataset_documents(name: str, *, split: str = "train", field: str = "text", max_chars: int) -> list[str]:
    """Documents of a Hugging Face ``datasets`` dataset (``name`` or ``name:config``), from the local cache.

    Raises:
        RuntimeError: ``datasets`` is not installed, or the dataset is not available offline.
        ValueError: the dataset has no column ``field``.
    """
    try:
        import datasets
    except ModuleNotFoundError:
        raise RuntimeError(
            f"The 'dataset' option ({name!r}) needs the 'datasets' package, which is not installed. "
            "Install it (pip install datasets), or use the default corpus or 'text_file'."
        ) from None
    path, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(path, config or None, split=split)
    except Exception as exc:
        raise RuntimeError(
            f"The 'dataset' option: could not load {name!r} (split {split!r}) from the local cache: {exc}. "
            "Download it once where the internet is reachable, or use the default corpus or 'text_file'."
        ) from None
    if field not in ds.column_names:
        raise ValueError(
            f"The 'dataset_field' option must name a text column of {name!r}; available: {ds.column_names}. "
            f"Got {field!r} instead."
        )
    out: list[str] = []
    total = 0
    for row in ds:
        text = str(row[field])
        out.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return out


def chunk_documents(documents: Iterable[str], *, chunk_chars: int = 4000, dedupe: bool = True) -> list[str]:
    """Cut documents into chunks of about ``chunk_chars`` characters at paragraph boundaries.

    A paragraph longer than ``chunk_chars`` becomes a chunk of its own. Chunks never span documents.

    Args:
        documents: the texts; paragraphs are separated by blank lines.
        chunk_chars: target chunk size.
        dedupe: drop every repeat of a paragraph already seen (whitespace-stripped, exact). Corpora repeat
            text across documents (about 20 % of ``pydoc_data.topics`` is repeated sections), and a repeat
            on the other side of the train/validation split would leak validation text into training.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be >= 1, but got {chunk_chars}")
    chunks: list[str] = []
    seen: set[str] = set()
    for doc in documents:
        current: list[str] = []
        size = 0
        for para in doc.split("\n\n"):
            if dedupe:
                key = para.strip()
                if key in seen:
                    continue
                seen.add(key)
            if current and size + len(para) > chunk_chars:
                chunks.append("\n\n".join(current))
                current, size = [], 0
            current.append(para)
            size += len(para) + 2
        if current and any(p.strip() for p in current):
            chunks.append("\n\n".join(current))
    return chunks


def split_chunks(
    chunks: Sequence[str], *, val_fraction: float, salt: str = "frontier"
) -> tuple[list[str], list[str]]:
    """A deterministic train/validation split by a hash of each chunk's *content*.

    Identical chunks always land on the same side, so no validation text appears in training; the split does
    not depend on the order of the chunks, the process or the Python hash seed.

    Args:
        chunks: text chunks (see :func:`chunk_documents`).
        val_fraction: the share of chunks (not characters) that goes to validation, ``0 < f < 1``.
        salt: changes which chunks go where.

    Returns:
        ``(train, validation)``, each in the input order. Validation gets at least one chunk and training
        keeps at least one when there are two or more distinct chunks.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), but got {val_fraction}")
    scores = [
        int.from_bytes(hashlib.sha256(f"{salt}\0{c}".encode()).digest()[:8], "little") / 2**64 for c in chunks
    ]
    val_mask = [s < val_fraction for s in scores]
    if not any(val_mask) and len(set(chunks)) > 1:
        # Too few chunks for the fraction to pick one: take the lowest score (and its duplicates).
        lowest = min(scores)
        val_mask = [s == lowest for s in scores]
    if all(val_mask) and len(set(chunks)) > 1:
        highest = max(scores)
        val_mask = [s != highest for s in scores]
    train = [c for c, v in zip(chunks, val_mask, strict=True) if not v]
    val = [c for c, v in zip(chunks, val_mask, strict=True) if v]
    return train, val


def byte_tokens(texts: Iterable[str], *, separator: str = "\n\n") -> bytes:
    """Byte-level tokens (vocabulary 256): the UTF-8 bytes of the texts joined by ``separator``."""
    return separator.join(texts).encode("utf-8")
