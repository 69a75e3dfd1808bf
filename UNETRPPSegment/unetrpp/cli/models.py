"""``unetrpp models``: list, show, import, verify, remove and export model weights.

unetrpp models                              table of models, installed or not (instant: no torch)
unetrpp models show synapse                 the whole model card
unetrpp models import FILE --name synapse   install weights downloaded by hand
unetrpp models verify synapse               re-hash the installed weights, say what they were compared with
unetrpp models remove synapse               delete them from the cache
unetrpp models export CKPT OUT.unetrpp --name synapse   official checkpoint -> one .unetrpp file
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from unetrpp.models.cards import ModelCard

__all__ = ["add_parser", "run"]

_WIDTH = 100


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, show, import, verify, remove or export models",
        description="Model cards and the weights cache (set UNETRPP_HOME to move the cache).",
    )
    parser.set_defaults(run=run, action="list", json=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    listing = actions.add_parser("list", help="table of all models (the default)")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout instead of a table")

    show = actions.add_parser("show", help="print a model card")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="the card as JSON")

    install = actions.add_parser("import", help="install a weights file downloaded by hand")
    install.add_argument("path", help="official model_final_checkpoint.model or a .unetrpp file")
    install.add_argument("--name", required=True, help="the model it belongs to (see `unetrpp models`)")
    install.add_argument("--overwrite", action="store_true", help="replace weights already installed")

    verify = actions.add_parser(
        "verify", help="re-hash installed weights against the pinned or recorded SHA256"
    )
    verify.add_argument("name")

    remove = actions.add_parser("remove", help="delete installed weights")
    remove.add_argument("name")

    export = actions.add_parser("export", help="convert an official checkpoint into one .unetrpp file")
    export.add_argument("checkpoint", help="official model_final_checkpoint.model (plans from its .pkl)")
    export.add_argument("output", help="the .unetrpp file to write")
    export.add_argument("--name", required=True, help="the model the checkpoint belongs to")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    action = args.action or "list"
    out = sys.stdout
    if action == "list":
        return _list(out, as_json=args.json)
    if action == "show":
        return _show(args.name, out, as_json=args.json)

    from unetrpp.models import store

    if action == "import":
        path = store.import_weights(args.path, args.name, overwrite=args.overwrite)
        print(f"installed {args.name}: {path}", file=out)
    elif action == "verify":
        checked = store.verify(args.name)
        print(
            f"{args.name}: intact ({checked.path}): SHA256 {checked.sha256} equals {checked.basis}", file=out
        )
    elif action == "remove":
        folder = store.remove(args.name)
        print(f"removed {args.name} ({folder})", file=out)
    elif action == "export":
        from unetrpp.models.export import export_official

        path = export_official(args.checkpoint, args.output, args.name, overwrite=args.overwrite)
        print(f"wrote {path}", file=out)
    return 0


def _rows() -> list[dict[str, object]]:
    from unetrpp.models import store
    from unetrpp.models.registry import list_cards

    rows = []
    for card in list_cards():
        record = store.installed_record(card)
        path = store.installed_weights(card)
        rows.append(
            {
                "name": card.name,
                "title": card.title,
                "modality": card.modality,
                "inputs": list(card.input_channels),
                "installed": path is not None,
                "bundled": store.is_bundled(card),
                "size_bytes": record.size_bytes if (record and path) else None,
                "path": str(path) if path else None,
            }
        )
    return rows


def _list(out: TextIO, *, as_json: bool) -> int:
    from unetrpp.models import store

    rows = _rows()
    if as_json:
        json.dump({"home": str(store.model_home()), "models": rows}, out, indent=2)
        out.write("\n")
        return 0
    table = [("NAME", "MODALITY", "INPUTS", "INSTALLED", "SIZE", "TITLE")]
    for row in rows:
        status = "bundled" if row["bundled"] and row["installed"] else ("yes" if row["installed"] else "no")
        size = f"{row['size_bytes'] / 1e6:.0f} MB" if row["size_bytes"] else "-"
        table.append(
            (row["name"], row["modality"], ", ".join(row["inputs"]), status, size, row["title"])  # type: ignore[arg-type]
        )
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        cells = [str(cell).ljust(width) for cell, width in zip(line, widths)]
        print("  ".join([*cells, str(line[-1])]).rstrip(), file=out)
    home = store.model_home()
    print(f"\nWeights cache: {home / 'models'} (set UNETRPP_HOME to move it)", file=out)
    if home.exists() and not home.is_dir():
        print(f"  {home} is not a folder: nothing can be installed there (fix UNETRPP_HOME)", file=out)
    for row in rows:
        if row["path"]:
            print(f"  {row['name']}: {row['path']}", file=out)
    missing = [str(row["name"]) for row in rows if not row["installed"] and not row["bundled"]]
    if missing:
        print(f"Get weights with `unetrpp download NAME` ({', '.join(missing)} not installed).", file=out)
    return 0


def _show(name: str, out: TextIO, *, as_json: bool) -> int:
    from unetrpp.models import store
    from unetrpp.models.registry import find_card

    card = find_card(name)
    if as_json:
        json.dump(card.to_dict(), out, indent=2, ensure_ascii=False)
        out.write("\n")
        return 0
    path = store.installed_weights(card)
    lines = [
        f"{card.name}: {card.title}",
        "",
        _field("Task", card.task),
        _field("Modality", card.modality),
        _field("Inputs", ", ".join(f"{i}. {c}" for i, c in enumerate(card.input_channels, 1))),
        _field(
            "Network", f"UNETR++ '{card.variant}' variant, patch {_zyx(card.patch_size_zyx)} voxels (z, y, x)"
        ),
        _field("Orientation", f"{card.orientation} -- {card.orientation_note}"),
        _field("Preprocessing", _describe_plans(card)),
        "Structures:",
        *(f"  {value:>3}  {label}" for value, label in card.labels),
        _field("Weights", _weights_status(card, path)),
        *(
            _field("  source", f"{w.url} ({w.format}{', sha256 ' + w.sha256 if w.sha256 else ''})")
            for w in card.weights
        ),
        _field("Paper accuracy", card.paper_accuracy),
        _field("Licence", card.licence),
        _field("Citation", card.citation),
    ]
    if card.notes:
        lines.append(_field("Notes", card.notes))
    print("\n".join(lines), file=out)
    return 0


def _weights_status(card: ModelCard, path: Path | None) -> str:
    from unetrpp.models import store

    if path is not None:
        return f"{'bundled' if store.is_bundled(card) else 'installed'} at {path}"
    if store.is_bundled(card):
        return "missing: this installation lacks its bundled file (reinstall unetrpp)"
    return f"not installed (`unetrpp download {card.name}`)"


def _field(label: str, text: str) -> str:
    indent = " " * 16
    body = textwrap.fill(
        text or "-",
        width=_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return f"{label + ':':<16}{body[16:]}"


def _zyx(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return " x ".join(f"{v:.8g}" for v in values)


def _describe_plans(card: ModelCard) -> str:
    plans = card.plans
    if plans is None:
        return "read from the plans shipped with the weights"
    parts = [f"resample to {_zyx(plans.target_spacing_zyx)} mm (z, y, x)"]
    for name, channel in zip(card.input_channels, plans.channels):
        if channel.scheme.value == "CT":
            parts.append(
                f"{name}: clip [{channel.lower_bound:g}, {channel.upper_bound:g}], "
                f"mean {channel.mean:.8g}, sd {channel.sd:.8g}"
            )
        else:
            parts.append(
                f"{name}: per-image z-score{' in the non-zero mask' if channel.use_nonzero_mask else ''}"
            )
    parts.append(f"{plans.num_classes} output classes incl. background")
    return "; ".join(parts)
