"""The report's "Dataset audit" section, from the run folder's audit.json (`automl.audit.run.audit_run`).

Findings are shown as the photos themselves (small inline JPEGs, the path on hover and in the caption), with the
given and suggested class and the score, so a user can judge them at a glance; nothing in the dataset is touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from automl.report.page import MAX_THUMBNAILS, Run, _e, _note, _table, _thumbnail

MAX_AUDIT_BYTES = 64 * 1024**2
SHOWN_PAIRS = 12
SHOWN_OUTLIERS = 12


def render_audit(run: Run) -> str:
    """The section's HTML; thumbnails only of photos under the run's `photo_roots` (as the rest of the report)."""
    audit = _read_audit(run.folder.audit)
    if not audit:
        return _note(
            f"no dataset audit in this run folder ({run.folder.audit.name}); `automl data audit RECIPE` makes one"
        )
    if "error" in audit:
        return _note(f"the dataset audit failed: {audit['error']}")
    return "".join(
        (
            _overview(audit),
            _label_issues(audit["label_issues"], run.photo_roots),
            _near_duplicates(audit["near_duplicates"], run.photo_roots),
            _outliers(audit["outliers"], run.photo_roots),
            _exact_copies(audit["exact_copies"]),
        )
    )


def _overview(audit: dict[str, Any]) -> str:
    counts, model = audit["counts"], audit["model"]
    cards = [
        ("likely label errors", counts["label_issues"]),
        ("near-duplicate pairs", counts["near_duplicates"]),
        ("… across the test split", counts["leaks_split"]),
        ("… across folds", counts["leaks_fold"]),
        ("outliers", counts["outliers"]),
        ("same bytes in two classes", counts["exact_copies_across_classes"]),
        ("largest / smallest class", f"{audit['imbalance_ratio']:.1f}×"),
    ]
    html = (
        '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards) + "</div>"
    )
    if model.get("source") == "LR-CV":
        source = (
            f"probabilities out of sample: logistic regression on {model['backbone']} pooled vectors, C {model['c']} "
            f"by {model['folds']}-fold cross-validation (OOF accuracy {model['oof_accuracy']:.3f}, log-loss "
            f"{model['oof_log_loss']:.3f}); test photos judged by the refit on train+val"
        )
    else:
        source = f"probabilities given by the search ({model.get('judged', '?')} photos judged), {model['backbone']}"
    thresholds = audit.get("thresholds", {})
    return html + _note(
        f"{audit['photos']} photos; {source}; near-duplicate: centred cosine ≥ "
        f"{thresholds.get('near_duplicate_cosine')}; nothing was moved or deleted"
    )


def _read_audit(path: Path) -> dict[str, Any]:
    """audit.json as an object (a regular file of bounded size); missing, damaged or not an object: empty."""
    from automl.data.files import read_bounded

    try:
        value = json.loads(read_bounded(path, MAX_AUDIT_BYTES))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _figure(path: str, caption: str, roots: Sequence[Path]) -> str:
    uri = _thumbnail(path, roots)
    image = f'<img src="{uri}" alt="{_e(caption)}">' if uri else f"<p class=note>{_e('no longer readable')}</p>"
    return (
        f'<figure title="{_e(path)}">{image}<figcaption>{_e(caption)}<br>'
        f'<code style="word-break: break-all">{_e(_short(path))}</code></figcaption></figure>'
    )


def _short(path: str) -> str:
    """class folder/file name: the part of the path a user recognises."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


def _gallery(title: str, note: str, figures: Sequence[str]) -> str:
    """One finding's heading, its explanation and its thumbnails ("none found" without any)."""
    if not figures:
        return f"<h3>{title}</h3>" + _note("none found")
    return f"<h3>{title}</h3>" + _note(note) + f'<div class="thumbs">{"".join(figures)}</div>'


def _label_issues(issues: list[dict[str, Any]], roots: Sequence[Path]) -> str:
    figures = [
        _figure(item["path"], f"#{item['rank']} {item['given']} → {item['suggested']} (p {item['score']:.2f})", roots)
        for item in issues[:MAX_THUMBNAILS]
    ]
    note = (
        f"{len(issues)} photos whose given class is improbable out of sample (cleanlab, confident learning), "
        "lowest probability of the given class first; caption: given → suggested (p of the given class)"
    )
    return _gallery("Likely label errors", note, figures)


def _near_duplicates(pairs: list[dict[str, Any]], roots: Sequence[Path]) -> str:
    figures = []
    for pair in sorted(pairs, key=lambda pair: pair["leak"] is None)[:SHOWN_PAIRS]:
        where = f"leak across {pair['leak']}" if pair["leak"] else "same split"
        figures.append(_figure(pair["a"], f"{pair['a_label']} ({pair['a_split']})", roots))
        figures.append(
            _figure(pair["b"], f"{pair['b_label']} ({pair['b_split']}), cos {pair['cosine']:.3f}, {where}", roots)
        )
    note = f"{len(pairs)} pairs, those crossing the test split or two folds first; shown in pairs, left to right"
    return _gallery("Near-duplicates", note, figures)


def _outliers(outliers: list[dict[str, Any]], roots: Sequence[Path]) -> str:
    figures = [
        _figure(item["path"], f"{item['label']}, nearest {item['nearest_class']} (cos {item['similarity']:.2f})", roots)
        for item in outliers[:SHOWN_OUTLIERS]
    ]
    note = (
        f"{len(outliers)} photos that nothing here looks like (low cosine to their 5th most similar photo); "
        "caption: class, the class of the most similar photo"
    )
    return _gallery("Outliers", note, figures)


def _exact_copies(copies: list[dict[str, Any]]) -> str:
    if not copies:
        return ""
    rows = [(" = ".join(copy["paths"]), ", ".join(copy["classes"])) for copy in copies]
    return (
        "<h3>The same file in several classes</h3>"
        + _note("left out of training (no label can be right for both); keep each in one class")
        + _table(("files", "classes"), rows)
    )
