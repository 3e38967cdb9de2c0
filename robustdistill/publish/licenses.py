"""The ``license`` metadata of a card: a Hub licence id, or ``other`` with a name and a link.

The Hub accepts in a card's ``license`` field only its own ids (its metadata check refuses a
push with another), listed on https://huggingface.co/docs/hub/repositories-licenses.
``huggingface_hub`` ships no copy of that list, so :data:`HUB_LICENSES` is one, taken from
the page's source (``huggingface/hub-docs``, ``docs/hub/repositories-licenses.md`` at commit
242f4a1, 2026-08-22). A licence missing here (one the Hub added later, or a custom one) is
given as ``other`` with ``license_name`` and ``license_link``, as the Hub asks.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .card_results import CardError
from .push import upload_refusal, upload_skip

__all__ = ["HUB_LICENSES", "hub_license"]

#: The Hub's licence ids, in the order of its documentation page.
HUB_LICENSES: tuple[str, ...] = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0",
    "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0",
    "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl",
    "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by",
    "odbl", "openmdw-1.0", "openmdw-1.1", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license",
    "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other")


def hub_license(license: str, name: str | None = None, link: str | None = None,
                model_dir: str | Path | None = None) -> str:
    """The Hub id of ``license``, checked.

    Case and surrounding spaces are ignored (the Hub's ids are all lower-case, so SPDX's
    ``Apache-2.0`` is ``apache-2.0``); the id is returned lower-case, as the card writes it.

    Args:
        license: a Hub licence id (:data:`HUB_LICENSES`), e.g. ``apache-2.0`` or ``other``.
        name: ``license_name``, a short name of the licence; only with ``other``, and then
            required.
        link: ``license_link``, an ``http(s)`` URL of the licence's text (the scheme in any
            case, ``HTTPS://`` too) or the relative path of its file in ``model_dir``, which
            ``robustdistill push`` must upload with it (not a hidden file or one in a cache
            folder, :func:`~robustdistill.publish.push.upload_skip`); only with ``other``, and
            then required.
        model_dir: the student folder a relative ``link`` must name a file of.

    Returns:
        The lower-case Hub id.

    Raises:
        CardError: no licence; one that is not a Hub id (the closest id is suggested); ``other``
            without a name or a link, or a relative link to no file in ``model_dir`` or to one
            that ``push`` leaves out (``.LICENSE``, ``__pycache__/LICENSE``) or refuses; a name
            or a link with another licence.
    """
    if not license or not isinstance(license, str) or not license.strip():
        raise CardError("a licence is required (the teacher's licence binds its students)")
    key = license.strip().lower()
    if key not in HUB_LICENSES:
        close = difflib.get_close_matches(key, HUB_LICENSES, n=1)
        raise CardError(f"licence {license!r} is not a Hub licence id"
                        + (f" (did you mean {close[0]!r}?)" if close else "")
                        + "; see https://huggingface.co/docs/hub/repositories-licenses, or "
                        "use 'other' with --license-name and --license-link")
    if key != "other":
        if name is not None or link is not None:
            raise CardError(f"--license-name and --license-link are only for --license other "
                            f"({key!r} is a Hub licence id and needs neither)")
        return key
    if not (name and name.strip()) or not (link and link.strip()):
        raise CardError("licence 'other' needs --license-name (a short name of the licence) "
                        "and --license-link (a URL of its text, or its file in the model "
                        "folder)")
    if not link.lower().startswith(("https://", "http://")):  # a URL's scheme has no case
        path = Path(link)
        if (path.is_absolute() or ".." in path.parts or model_dir is None
                or not (Path(model_dir) / path).is_file()):
            raise CardError(f"--license-link {link!r} is neither an http(s) URL nor a file in "
                            f"the model folder {model_dir}")
        # push's own filter: a link to a file it does not upload points at nothing on the Hub
        if skipped := upload_skip(path):
            raise CardError(f"--license-link {link!r} names a file that robustdistill push "
                            f"does not upload ({skipped}); put the licence's text in a file it "
                            "uploads, e.g. LICENSE")
        if refused := upload_refusal(model_dir, path):
            raise CardError(f"--license-link {link!r}: robustdistill push would refuse the "
                            f"folder for this file: {refused}")
    return key
