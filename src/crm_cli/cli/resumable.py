"""What the resumable folder commands, ``crm batch`` and ``crm coco``, share: the ``--ray`` option
and its checks, and the text that names the weights in their resume records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .options import RefinerOptions
from .output import fail

if TYPE_CHECKING:
    from ..refiner_spec import RefinerSpec

RayOpt = Annotated[
    str | None,
    typer.Option("--ray", metavar="ADDRESS", rich_help_panel="Compute",
                 help="Run on Ray Data: 'local' starts Ray on this machine; or a cluster address (auto, "
                      "ray://head:10001). Inputs and outputs must be on storage every node sees. "
                      "Needs pip install 'crm-cli[ray]'."),
]


def require_ray_option() -> None:
    """Exit 2 with one line naming the extra when --ray is given but Ray is not installed."""
    from ..raybatch import RayUnavailableError, require_ray

    try:
        require_ray()
    except RayUnavailableError as exc:
        raise fail(str(exc), 2) from None


def checked_ray_spec(options: RefinerOptions, ray_address: str | None) -> RefinerSpec | None:
    """The usage checks of a run's backend, and with ``--ray`` of Ray and the device: the recipe
    each Ray actor builds its Refiner by, or None without ``--ray``."""
    if ray_address is None:
        options.check_backend()
        return None
    require_ray_option()
    return options.ray_spec()  # checks the backend too


def weights_identity(weights: Path | str | None) -> str:
    """The text that names the weights ``weights`` (None: the default ones) in an output's settings
    record (OutputRecord.of keeps a digest of it), found without loading them.

    One rule: the most exact name to be had without reading the weights file. When its sidecar
    records a sha256 (the digest the Refiner verifies the file against before refining, failing
    otherwise), that digest with the sidecar's ``final_stage`` entry and, when it has them, its
    ``partner`` and ``lone_stage`` entries (with those weights' own ``final_stage``), as sorted JSON
    (``{"final_stage": ..., "sha256": "..."}``); else the file itself, as ``"REAL_PATH SIZE MTIME_NS"``;
    else (no file to stat) ``"ABSOLUTE_PATH (not readable)"``, which no refined output records: loading
    such weights fails. These texts are what earlier runs recorded, so each must stay as it is: any
    change would have every output made before refined again as made with other settings.
    """
    from ..checkpoint import (
        LONE_STAGE_KEY,
        PARTNER_KEY,
        WeightsError,
        WeightsSidecar,
        default_weights_path,
        lone_stage_weights,
        partner_weights,
    )

    path = Path(weights) if weights else default_weights_path()
    try:
        side = WeightsSidecar(path)
        data = side.data or {}
    except (WeightsError, OSError, ValueError):
        data = {}  # the load reports it
    digest = data.get("sha256")
    if isinstance(digest, str) and digest:
        # The sidecar was read as JSON, so its entries dump as they are. The partner and lone-stage
        # weights (named by their sha256, checked at load) are named only when there are some, so that
        # the records of weights without them stay as they were.
        named = {"sha256": digest, "final_stage": data.get("final_stage")}
        for key, read_entry in ((PARTNER_KEY, partner_weights), (LONE_STAGE_KEY, lone_stage_weights)):
            if data.get(key) is None:
                continue
            named[key] = data[key]
            try:  # the entry as the load reads it (a malformed one or a missing file fails the load)
                entry = read_entry(side)
                stage = (WeightsSidecar(entry.path).data or {}).get("final_stage") if entry else None
            except (WeightsError, OSError, ValueError):
                stage = None  # the load reports it
            if stage is not None:  # how those weights run the stages they run: certainty, gate, scale
                named[f"{key}_final_stage"] = stage
        return json.dumps(named, sort_keys=True)
    try:
        info = path.stat()
    except OSError:
        return f"{path.absolute()} (not readable)"
    return f"{path.resolve()} {info.st_size} {info.st_mtime_ns}"
