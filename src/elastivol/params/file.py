"""Shared-file StorageClass parameters and volume handles, with the names and meaning of the EFS CSI driver.

One parser turns a CreateVolume ``parameters`` map into :class:`FileParameters`; the local and the
AWS providers both read that object, so a StorageClass written for EKS (seed 003) means the same
here, and one that EKS would refuse is refused here too, with a message that says what to change.

EFS names, defaults and checks are kept: ``provisioningMode: efs-ap`` is the one mode,
``gidRangeStart``/``gidRangeEnd`` go together and the end must be greater, ``uid``/``gid`` are
integers >= 0, ``subPathPattern`` knows ``${.PVC.name}``, ``${.PVC.namespace}`` and ``${.PV.name}``,
and the access point's directory is at most 100 characters and 5 levels deep. Where elastivol
differs it says so: the default GID range is 50000-60000 (one GID per access point, as many as
EFS allows access points per file system), ``deleteAccessPointRootDir`` is a StorageClass
parameter (a controller flag in EFS), ``enforceCapacity`` is new, and invalid booleans are errors
rather than silently "true".
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from elastivol import ids
from elastivol.domain import AccessPointSpec
from elastivol.errors import InvalidArgument, InvalidParameter

# -- keys ---------------------------------------------------------------------------------------
PROVISIONING_MODE = "provisioningMode"
FS_ID = "fileSystemId"
DIRECTORY_PERMS = "directoryPerms"
UID = "uid"
GID = "gid"
GID_RANGE_START = "gidRangeStart"
GID_RANGE_END = "gidRangeEnd"
BASE_PATH = "basePath"
SUB_PATH_PATTERN = "subPathPattern"
ENSURE_UNIQUE_DIRECTORY = "ensureUniqueDirectory"
REUSE_ACCESS_POINT = "reuseAccessPoint"
DELETE_ROOT_DIR = "deleteAccessPointRootDir"
ENFORCE_CAPACITY = "enforceCapacity"
# EFS reads `az` to pick a mount target for cross-account mounts; accepted so EKS StorageClasses
# keep working, and ignored by the local provider (every node sees the same root).
AZ = "az"
CSI_PREFIX = "csi.storage.k8s.io/"
PVC_NAME_KEY = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE_KEY = "csi.storage.k8s.io/pvc/namespace"
PV_NAME_KEY = "csi.storage.k8s.io/pv/name"

ACCESS_POINT_MODE = "efs-ap"
SUPPORTED_MODES = (ACCESS_POINT_MODE,)

ACCEPTED_KEYS = (
    PROVISIONING_MODE, FS_ID, DIRECTORY_PERMS, UID, GID, GID_RANGE_START, GID_RANGE_END, BASE_PATH,
    SUB_PATH_PATTERN, ENSURE_UNIQUE_DIRECTORY, REUSE_ACCESS_POINT, DELETE_ROOT_DIR, ENFORCE_CAPACITY, AZ,
)
_CANONICAL = {k.lower(): k for k in ACCEPTED_KEYS}
_ACCEPTED_TEXT = ", ".join((*ACCEPTED_KEYS, f"{CSI_PREFIX}* keys"))

DEFAULT_GID_RANGE = (50000, 60000)
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown, so it cannot own anything
MAX_PATH_CHARS = 100  # EFS limit on an access point's root directory
MAX_PATH_SLASHES = 5  # EFS counts "/" in the root directory: /a/b/c/d/e is the deepest allowed
MAX_BASE_PATH_LEVELS = 4
UNIQUE_SUFFIX_HEX = 16

# Where elastivol keeps snapshots inside a file system root; no access point may live there.
RESERVED_TOP_DIR = ".elastivol"

PATTERN_COMPONENTS = {
    ".PV.name": PV_NAME_KEY,
    ".PVC.name": PVC_NAME_KEY,
    ".PVC.namespace": PVC_NAMESPACE_KEY,
}
_PATTERN_VAR = re.compile(r"\$\{(\.PVC\.name|\.PVC\.namespace|\.PV\.name)\}")
_DECIMAL = re.compile(r"[0-9]+")
_OCTAL_PERMS = re.compile(r"[0-7]{3,4}")
# The spellings Go's strconv.ParseBool accepts, which is what EFS users write.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")

HANDLE_FORMS = "fs-ID, fs-ID:/subpath, fs-ID::fsap-ID or fs-ID:/subpath:fsap-ID"


@dataclass(frozen=True)
class FileParameters:
    """A validated StorageClass for shared file volumes."""

    fs_id: str
    directory_perms: int
    provisioning_mode: str = ACCESS_POINT_MODE
    uid: int | None = None
    gid: int | None = None
    gid_range: tuple[int, int] = DEFAULT_GID_RANGE
    base_path: str = "/"
    sub_path_pattern: str | None = None
    ensure_unique_directory: bool = True
    reuse_access_point: bool = False
    delete_access_point_root_dir: bool = False
    enforce_capacity: bool = False
    az: str | None = None
    pvc_name: str | None = None
    pvc_namespace: str | None = None
    pv_name: str | None = None


@dataclass(frozen=True)
class VolumeHandle:
    """A parsed volume id / static ``volumeHandle``: ``fs_id[:subpath[:ap_id]]``."""

    fs_id: str
    subpath: str = ""  # normalised, relative ("" for the root of the file system or access point)
    ap_id: str = ""

    @property
    def volume_id(self) -> str:
        if self.ap_id:
            return f"{self.fs_id}:{'/' + self.subpath if self.subpath else ''}:{self.ap_id}"
        return f"{self.fs_id}:/{self.subpath}" if self.subpath else self.fs_id


# -- value parsing ------------------------------------------------------------------------------
def _bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidParameter(key, f'Invalid value for {key} parameter: {value!r}; write "true" or "false"')


def _id(key: str, value: str) -> int:
    text = value.strip()
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    if not _DECIMAL.fullmatch(digits):
        raise InvalidParameter(key, f"Failed to parse invalid {key}: {value!r} is not a whole number")
    digits = digits.lstrip("0") or "0"  # int() refuses more than 4300 digits, leading zeros included
    if negative and digits != "0":
        raise InvalidParameter(key, f"{key} must be greater or equal than 0; {value[:40]!r} was given")
    if len(digits) > len(str(MAX_ID)):
        raise InvalidParameter(key, f"{key} is too large ({len(text)} characters); POSIX ids go up to {MAX_ID}")
    number = int(digits)
    if number > MAX_ID:
        raise InvalidParameter(key, f"{key} {number} is too large; POSIX ids go up to {MAX_ID}")
    return number


def _range_bound(key: str, value: str) -> int:
    number = _id(key, value)
    if key == GID_RANGE_START and number == 0:
        raise InvalidParameter(key, f"{key} must be greater than 0; {value!r} was given")
    return number


def _perms(value: str) -> int:
    if not _OCTAL_PERMS.fullmatch(value):
        raise InvalidParameter(
            DIRECTORY_PERMS,
            f'directoryPerms {value!r} is not a file mode: write 3 or 4 octal digits, such as "700" or "2770"',
        )
    return int(value, 8)


def _clean_components(key: str, text: str) -> list[str]:
    if "\x00" in text:
        raise InvalidParameter(key, f"{key} must not contain NUL bytes")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidParameter(key, f"{key} {text!r} must not contain '..': give a path inside the file system")
    return parts


def _base_path(value: str) -> str:
    if len(value) > MAX_PATH_CHARS:
        raise InvalidParameter(
            BASE_PATH, f"basePath is {len(value)} characters long; EFS allows at most {MAX_PATH_CHARS}: shorten it"
        )
    parts = _clean_components(BASE_PATH, value)
    if len(parts) > MAX_BASE_PATH_LEVELS:
        raise InvalidParameter(
            BASE_PATH,
            f"basePath {value!r} is {len(parts)} levels deep; at most {MAX_BASE_PATH_LEVELS} are allowed "
            "(EFS limits an access point's directory to 4 subdirectories plus its own name)",
        )
    if parts and parts[0] == RESERVED_TOP_DIR:
        raise InvalidParameter(BASE_PATH, f"basePath must not be under /{RESERVED_TOP_DIR}: elastivol keeps snapshots there")
    return "/" + "/".join(parts)


def _pattern_error(pattern: str) -> InvalidParameter:
    names = ", ".join("${" + k + "}" for k in sorted(PATTERN_COMPONENTS))
    return InvalidParameter(
        SUB_PATH_PATTERN,
        f'Path specified "{pattern}" contains invalid elements. Can only contain {names} '
        "(and plain text between them)",
    )


def _check_pattern(pattern: str) -> None:
    if "${" in _PATTERN_VAR.sub("", pattern) or "}" in _PATTERN_VAR.sub("", pattern):
        raise _pattern_error(pattern)
    _clean_components(SUB_PATH_PATTERN, _PATTERN_VAR.sub("x", pattern))
    if not _PATTERN_VAR.sub("x", pattern).strip("/"):
        raise InvalidParameter(SUB_PATH_PATTERN, "subPathPattern is empty: remove it, or give a pattern such as ${.PVC.namespace}/${.PVC.name}")


# -- the parser ---------------------------------------------------------------------------------
def parse_file_parameters(raw: Mapping[str, str]) -> FileParameters:
    """Validate a StorageClass ``parameters`` map (keys case-insensitive) into :class:`FileParameters`."""
    values: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidParameter(key, f"parameter {key!r} must be a string, not {type(value).__name__}")
        canonical = _CANONICAL.get(key.lower())
        if canonical is None:
            if key.lower().startswith(CSI_PREFIX):
                continue  # provisioner-added metadata; the three we use are read below
            raise InvalidParameter(key, f"unknown parameter {key!r}; the accepted keys are: {_ACCEPTED_TEXT}")
        if canonical in values:
            raise InvalidParameter(key, f"parameter {canonical} is given twice (with different spellings); keep one")
        values[canonical] = value

    if PROVISIONING_MODE not in values:
        raise InvalidParameter(
            PROVISIONING_MODE, f"Missing {PROVISIONING_MODE} parameter: add provisioningMode: {ACCESS_POINT_MODE} to the StorageClass"
        )
    mode = values[PROVISIONING_MODE]
    if mode not in SUPPORTED_MODES:
        raise InvalidParameter(
            PROVISIONING_MODE,
            f"Provisioning mode {mode!r} is not supported; supported modes: {', '.join(SUPPORTED_MODES)} "
            "(one access point per volume)",
        )
    if FS_ID not in values:
        raise InvalidParameter(
            FS_ID, f"Missing {FS_ID} parameter: name the file system (see `elastivol fs list`), e.g. fileSystemId: fs-..."
        )
    fs_id = values[FS_ID].strip()
    if not fs_id:
        raise InvalidParameter(FS_ID, f"Parameter {FS_ID} cannot be empty")
    if DIRECTORY_PERMS not in values:
        raise InvalidParameter(
            DIRECTORY_PERMS,
            'Missing directoryPerms parameter: give the access point directory\'s mode in octal, e.g. directoryPerms: "700"',
        )
    perms = _perms(values[DIRECTORY_PERMS])
    uid = _id(UID, values[UID]) if UID in values else None
    gid = _id(GID, values[GID]) if GID in values else None

    start = _range_bound(GID_RANGE_START, values[GID_RANGE_START]) if GID_RANGE_START in values else None
    end = _range_bound(GID_RANGE_END, values[GID_RANGE_END]) if GID_RANGE_END in values else None
    if (start is None) != (end is None):
        missing = GID_RANGE_START if start is None else GID_RANGE_END
        raise InvalidParameter(
            missing, f"Missing {missing} parameter: gidRangeStart and gidRangeEnd go together; give both or neither"
        )
    gid_range = DEFAULT_GID_RANGE
    if start is not None and end is not None:
        if end <= start:
            raise InvalidParameter(
                GID_RANGE_END, f"{GID_RANGE_END} must be greater than {GID_RANGE_START} (got {start}-{end})"
            )
        gid_range = (start, end)

    base_path = _base_path(values[BASE_PATH]) if BASE_PATH in values else "/"
    pattern = values.get(SUB_PATH_PATTERN)
    if pattern is not None:
        _check_pattern(pattern)

    def flag(key: str, default: bool) -> bool:
        return _bool(key, values[key]) if key in values else default

    return FileParameters(
        fs_id=fs_id,
        directory_perms=perms,
        provisioning_mode=mode,
        uid=uid,
        gid=gid,
        gid_range=gid_range,
        base_path=base_path,
        sub_path_pattern=pattern,
        ensure_unique_directory=flag(ENSURE_UNIQUE_DIRECTORY, True),
        reuse_access_point=flag(REUSE_ACCESS_POINT, False),
        delete_access_point_root_dir=flag(DELETE_ROOT_DIR, False),
        enforce_capacity=flag(ENFORCE_CAPACITY, False),
        az=values.get(AZ) or None,
        pvc_name=raw.get(PVC_NAME_KEY) or None,
        pvc_namespace=raw.get(PVC_NAMESPACE_KEY) or None,
        pv_name=raw.get(PV_NAME_KEY) or None,
    )


# -- the access point's directory ---------------------------------------------------------------
def unique_suffix(volume_name: str) -> str:
    """A suffix that is unique per volume and the same on every retry of one CreateVolume.

    EFS appends a random UUID; a hash of the CSI volume name (itself unique per PV) is as unique
    and keeps a retried CreateVolume idempotent.
    """
    return hashlib.sha256(volume_name.encode()).hexdigest()[:UNIQUE_SUFFIX_HEX]


def _interpolate(params: FileParameters, pattern: str) -> str:
    known = {".PVC.name": params.pvc_name, ".PVC.namespace": params.pvc_namespace, ".PV.name": params.pv_name}

    def value(match: re.Match[str]) -> str:
        got = known[match.group(1)]
        if not got:
            raise InvalidParameter(
                SUB_PATH_PATTERN,
                f"subPathPattern uses ${{{match.group(1)}}} but the request carries no "
                f"{PATTERN_COMPONENTS[match.group(1)]}: run external-provisioner with --extra-create-metadata",
            )
        if "/" in got or got in (".", "..") or "\x00" in got:
            raise InvalidParameter(SUB_PATH_PATTERN, f"${{{match.group(1)}}} is {got!r}, which cannot be a directory name")
        return got

    return _PATTERN_VAR.sub(value, pattern)


def access_point_directory(params: FileParameters, volume_name: str) -> str:
    """The access point's root directory, absolute within the file system: ``/basePath/<name>``."""
    if params.sub_path_pattern is None:
        # EFS names the directory after the volume (the PV name), which is unique already.
        if "/" in volume_name or volume_name in (".", ".."):
            raise InvalidArgument(f"volume name {volume_name!r} cannot be a directory name")
        leaf = volume_name
    else:
        leaf = _interpolate(params, params.sub_path_pattern).strip("/")
        if params.ensure_unique_directory:
            leaf = f"{leaf}-{unique_suffix(volume_name)}"
    directory = posixpath.normpath(posixpath.join("/", params.base_path.lstrip("/"), leaf))
    parts = _clean_components(SUB_PATH_PATTERN, directory)
    if parts and parts[0] == RESERVED_TOP_DIR:
        raise InvalidParameter(SUB_PATH_PATTERN, f"the access point directory must not be under /{RESERVED_TOP_DIR}")
    if len(directory) > MAX_PATH_CHARS:
        # What to change first: the directory can be long enough for a message to be cut.
        shown = directory if len(directory) <= 2 * MAX_PATH_CHARS else directory[:MAX_PATH_CHARS] + "..."
        raise InvalidArgument(
            f"shorten basePath or subPathPattern: the access point directory is {len(directory)} characters long "
            f"and EFS allows at most {MAX_PATH_CHARS} ({shown!r})"
        )
    if directory.count("/") > MAX_PATH_SLASHES:
        raise InvalidArgument(
            f"access point directory {directory!r} is {directory.count('/')} levels deep; EFS allows at most "
            f"{MAX_PATH_SLASHES} (4 subdirectories plus the volume's own): use a shorter basePath or subPathPattern"
        )
    return directory


def reuse_key(params: FileParameters) -> str:
    """What ``reuseAccessPoint`` matches on: the PVC's namespace and name.

    EFS hashes the PVC name alone; the namespace is added here so that a PVC in one namespace
    never receives another namespace's data.
    """
    if not params.pvc_name:
        raise InvalidParameter(
            REUSE_ACCESS_POINT,
            f'reuseAccessPoint: "true" needs the PVC name ({PVC_NAME_KEY}): run external-provisioner with '
            "--extra-create-metadata",
        )
    text = f"{params.pvc_namespace or ''}/{params.pvc_name}"
    return hashlib.sha256(text.encode()).hexdigest()


def access_point_spec(
    params: FileParameters, name: str, capacity_bytes: int, *, source_snapshot_id: str = ""
) -> AccessPointSpec:
    """The provider-side request for a new access point (or the existing one with this name)."""
    tags: dict[str, str] = {}
    if params.pvc_name:
        tags["kubernetes.io/created-for/pvc/name"] = params.pvc_name
    if params.pvc_namespace:
        tags["kubernetes.io/created-for/pvc/namespace"] = params.pvc_namespace
    if params.pv_name:
        tags["kubernetes.io/created-for/pv/name"] = params.pv_name
    return AccessPointSpec(
        name=name,
        fs_id=params.fs_id,
        directory=access_point_directory(params, name),
        uid=params.uid,
        gid=params.gid,
        gid_range=params.gid_range,
        perms=params.directory_perms,
        capacity_bytes=capacity_bytes,
        enforce_capacity=params.enforce_capacity,
        reuse=params.reuse_access_point,
        delete_root_dir=params.delete_access_point_root_dir,
        tags=tags,
        source_snapshot_id=source_snapshot_id,
        reuse_key=reuse_key(params) if params.reuse_access_point else "",
        base_path=params.base_path,
    )


# -- volume handles -----------------------------------------------------------------------------
def parse_volume_handle(handle: str) -> VolumeHandle:
    """Parse ``fs-ID``, ``fs-ID:/subpath``, ``fs-ID::fsap-ID`` or ``fs-ID:/subpath:fsap-ID``.

    As in EFS, empty trailing fields are allowed (``fs-ID:`` is ``fs-ID``) and the subpath may be
    given without its leading slash. Nothing here touches the filesystem.
    """
    shown = handle if len(handle) <= 120 else handle[:117] + "..."
    tokens = handle.split(":")
    if not ids.is_filesystem_id(tokens[0]):
        raise InvalidArgument(
            f"volume ID (volume_id) '{shown}' is invalid: expected a file system ID of the form 'fs-' followed by 17 "
            f"lowercase hex characters, in one of the forms {HANDLE_FORMS}"
        )
    if len(tokens) > 3:
        raise InvalidArgument(
            f"volume ID (volume_id) '{shown}' is invalid: expected at most three fields separated by ':' "
            f"({HANDLE_FORMS}); a subpath cannot contain ':'"
        )
    subpath = ""
    if len(tokens) >= 2 and tokens[1]:
        raw = tokens[1]
        if "\x00" in raw:
            raise InvalidArgument(f"volume ID (volume_id) '{shown}' has a subpath with a NUL byte")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise InvalidArgument(
                f"volume ID (volume_id) '{shown}' has subpath '{raw}' with '..': give a path inside the file system, "
                "as in fs-ID:/subpath"
            )
        subpath = "/".join(parts)
    ap_id = ""
    if len(tokens) == 3 and tokens[2]:
        ap_id = tokens[2]
        if not ids.is_access_point_id(ap_id):
            raise InvalidArgument(
                f"volume ID (volume_id) '{shown}' has an invalid access point ID '{ap_id[:40]}': expected 'fsap-' followed by "
                "17 lowercase hex characters, as in fs-ID::fsap-ID or fs-ID:/subpath:fsap-ID"
            )
    return VolumeHandle(tokens[0], subpath, ap_id)
