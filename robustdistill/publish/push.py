"""Publishing a student folder to the Hugging Face Hub in one commit.

``robustdistill push --model DIR --repo-id ORG/NAME [--private] [--revision BRANCH]
[--dry-run]`` uploads the folder written by ``robustdistill export`` and ``robustdistill
card``: weights, ``config.json``, ``preprocessor_config.json``, the card (``README.md``) and its
plots, ``heads/``, ``training_config.yaml`` and ``onnx/`` when present, with one
``HfApi.upload_folder`` call (one commit, which also deletes the files of an earlier push
that the folder no longer has; ``.gitattributes`` stays). ``--dry-run`` lists exactly those
files (the same list is passed to ``upload_folder`` as ``allow_patterns``) and contacts
nothing.

The token comes from ``huggingface_hub`` itself (``HF_TOKEN`` or the saved ``hf auth login``);
it is never printed, logged, written into a file or put in an error message: errors from the
Hub are re-raised with any occurrence of the token replaced by ``***``, and the upload is
refused if any file to upload contains the token.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

__all__ = ["PushError", "UploadPlan", "plan_upload", "push", "push_main", "upload_refusal",
           "upload_skip"]

logger = logging.getLogger(__name__)

_REQUIRED = ("config.json", "README.md")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_SKIP_DIRS = {"__pycache__", ".git", ".cache", ".ipynb_checkpoints"}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


class PushError(RuntimeError):
    """The folder cannot be pushed as asked (the message says why; it never holds a token)."""


@dataclass
class UploadPlan:
    """What one push uploads.

    Attributes:
        folder: the local folder.
        files: paths relative to ``folder``, sorted; they keep these paths in the repository.
        sizes: bytes per file.
        repo_id, revision, private, commit_message: where and how.
    """

    folder: Path
    files: list[str]
    sizes: dict[str, int]
    repo_id: str
    revision: str | None
    private: bool | None
    commit_message: str

    def describe(self) -> str:
        """The listing printed by ``--dry-run``."""
        total = sum(self.sizes.values())
        visibility = "" if self.private is None else (", private" if self.private
                                                      else ", public")
        lines = [f"would upload {len(self.files)} files ({total / 1e6:.2f} MB) from "
                 f"{self.folder} to https://huggingface.co/{self.repo_id} "
                 f"(revision {self.revision or 'main'}{visibility}) in one commit that "
                 f"deletes the repository's other files (.gitattributes stays): "
                 f"{self.commit_message!r}"]
        lines += [f"  {self.sizes[f]:>12,d}  {f}" for f in self.files]
        return "\n".join(lines)


def _has_glob_chars(name: str) -> bool:
    return any(c in name for c in "*?[]")


def upload_skip(rel: str | PurePath) -> str | None:
    """Why :func:`push` leaves out the path ``rel`` (relative to the model folder): a hidden
    file or folder (``.*``) or a cache folder (``__pycache__``...) on it; None when it is not
    left out for its name. :func:`plan_upload`'s filter, and the check of a card's
    ``license_link`` (:func:`~robustdistill.publish.licenses.hub_license`)."""
    for part in PurePath(rel).parts:
        if part in _SKIP_DIRS:
            return f"{part!r} is a cache folder"
        if part.startswith("."):
            return f"{part!r} is hidden"
    return None


def upload_refusal(folder: str | Path, rel: str | PurePath) -> str | None:
    """Why :func:`plan_upload` refuses the folder for its file ``rel``: a symlink leaving
    ``folder`` or a name with glob characters; None when it does not."""
    folder, rel = Path(folder), PurePath(rel)
    if folder.resolve() not in (folder / rel).resolve().parents:
        return f"{rel} is a link to outside {folder}; copy the file in instead"
    if _has_glob_chars(rel.as_posix()):
        return f"file name {rel.as_posix()!r} has glob characters (*?[]); rename it"
    return None


def plan_upload(model_dir: str | Path, repo_id: str, *, revision: str | None = None,
                private: bool | None = None, commit_message: str | None = None) -> UploadPlan:
    """List what :func:`push` would upload, checking the folder first (no network).

    Every regular file under ``model_dir`` is uploaded, except hidden files and caches
    (``.*``, ``__pycache__``...: :func:`upload_skip`).

    Raises:
        PushError: a malformed repo id; a missing ``config.json``, ``README.md`` (run
            ``robustdistill card`` first) or weights file; a file name with glob characters or
            a symlink leaving the folder (:func:`upload_refusal`).
        FileNotFoundError: no such folder.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not _REPO_ID.fullmatch(repo_id or "") or ".." in repo_id:
        raise PushError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    missing = [name for name in _REQUIRED if not (folder / name).is_file()]
    if missing:
        hint = " (write the card with `robustdistill card`)" if "README.md" in missing else ""
        raise PushError(f"{folder} has no {', '.join(missing)}{hint}")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise PushError(f"{folder} has no weights ({' or '.join(_WEIGHTS)})")
    files: list[str] = []
    sizes: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if upload_skip(rel) or not path.is_file():
            continue
        if refusal := upload_refusal(folder, rel):
            raise PushError(refusal)
        name = rel.as_posix()
        files.append(name)
        sizes[name] = path.stat().st_size
    for name in ("preprocessor_config.json", "training_config.yaml"):
        if name not in sizes:
            logger.warning("%s has no %s: it will not be on the Hub", folder, name)
    message = commit_message or f"Upload {repo_id.split('/')[-1]} (robustdistill)"
    return UploadPlan(folder=folder, files=files, sizes=sizes, repo_id=repo_id,
                      revision=revision, private=private, commit_message=message)


def _token_available_locally() -> bool:
    """Whether a token is configured, without contacting anything or reading its value out."""
    from huggingface_hub import constants

    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    return Path(constants.HF_TOKEN_PATH).is_file()


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _holds(path: Path, needle: bytes, chunk: int = 1 << 22) -> bool:
    """Whether the bytes of ``path`` contain ``needle`` (read in chunks that overlap by
    ``len(needle) - 1`` bytes, so a match across a chunk boundary is found)."""
    keep = len(needle) - 1
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            window = tail + block
            if needle in window:
                return True
            tail = window[-keep:] if keep else b""
    return False


def _check_files_free_of(plan: UploadPlan, token: str) -> None:
    """Refuse the upload when any file to upload holds the token: every file, whatever its
    name (a ``LICENSE``, ``train.log`` or ``setup.cfg`` is text too), as UTF-8 bytes."""
    needle = token.encode()
    for name in plan.files:
        if _holds(plan.folder / name, needle):
            raise PushError(f"{name} contains the Hugging Face token; refusing to upload it")


def push(model_dir: str | Path, repo_id: str, *, private: bool | None = None,
         revision: str | None = None, commit_message: str | None = None,
         dry_run: bool = False) -> UploadPlan:
    """Upload a student folder in one commit (``HfApi.upload_folder``) that replaces the
    repository's files: files of an earlier push that the folder no longer has (an old
    ``onnx/model.onnx``, a renamed plot) are deleted in the same commit (``delete_patterns``;
    ``huggingface_hub`` always keeps ``.gitattributes``).

    Creates the repository if needed (``create_repo(exist_ok=True)``, ``private`` as given;
    None keeps an existing repository's visibility) and the branch ``revision`` when given.

    Args:
        model_dir: the folder (student + card + heads + training config).
        repo_id: ``ORG/NAME`` on the Hub.
        private: make a new repository private (True) or public (False).
        revision: branch to commit to; default ``main``.
        commit_message: default ``"Upload <NAME> (robustdistill)"``.
        dry_run: only plan and list; nothing is contacted, no token is read.

    Returns:
        The :class:`UploadPlan` (what was, or would be, uploaded).

    Raises:
        PushError: as :func:`plan_upload`; no token; a file holding the token; any Hub error
            (its message with the token removed).
    """
    plan = plan_upload(model_dir, repo_id, revision=revision, private=private,
                       commit_message=commit_message)
    if dry_run:
        return plan
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    _check_files_free_of(plan, token)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(plan.folder),
                                 repo_type="model", revision=revision,
                                 commit_message=plan.commit_message,
                                 allow_patterns=list(plan.files), delete_patterns="*")
    except Exception as err:  # any Hub or network error: never let the token out
        raise PushError(f"push to {repo_id} failed: {type(err).__name__}: "
                        f"{_scrub(str(err), token)}") from None
    logger.info("pushed %d files to %s: %s", len(plan.files), repo_id,
                _scrub(str(getattr(info, "commit_url", info)), token))
    return plan


def push_main(argv: list[str]) -> int:
    """``robustdistill push --model DIR --repo-id ORG/NAME [--private] [--revision B]
    [--dry-run]``."""
    parser = argparse.ArgumentParser(prog="robustdistill push",
                                     description="Upload a student folder to the Hub in one "
                                                 "commit.")
    parser.add_argument("--model", required=True, help="the folder (after robustdistill card)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME")
    parser.add_argument("--private", action="store_true", default=None,
                        help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch (default main)")
    parser.add_argument("--commit-message", default=None,
                        help="default: 'Upload NAME (robustdistill)'")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be uploaded; contact nothing")
    args = parser.parse_args(argv)
    try:
        plan = push(args.model, args.repo_id, private=args.private, revision=args.revision,
                    commit_message=args.commit_message, dry_run=args.dry_run)
    except (PushError, FileNotFoundError) as err:
        parser.exit(2, f"robustdistill push: error: {err}\n")
    if args.dry_run:
        print(plan.describe())
        print("token: " + ("configured" if _token_available_locally() else
                           "none found (set HF_TOKEN or run `hf auth login` before pushing)"))
    else:
        print(f"pushed {len(plan.files)} files to https://huggingface.co/{args.repo_id}")
    return 0
