"""The CSI wire contract: generated stubs are fresh, descriptors match spec v1.12.0, secrets redact."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from elastivol.csi import CSI_SPEC_VERSION, csi_pb2, csi_pb2_grpc, secrets
from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
STUB_DIR = ROOT / "src" / "elastivol" / "csi"

# sha256 of the serialized FileDescriptorProto of proto/csi.proto. It equals the
# descriptor protoc produces from the upstream CSI v1.12.0 csi.proto, so any edit
# that changes a name, number, type, label or option changes this value. Only
# update it when moving to a new CSI spec version.
CONTRACT_SHA256 = "1c2906dec23c6f360d8bf46c2e68d9e5b91a072fa9235c9f92343ce07d428046"


def _load_generator() -> ModuleType:
    return load_script("gen_proto", ROOT / "scripts" / "gen_proto.py")


def _msg(name: str) -> Descriptor:
    return csi_pb2.DESCRIPTOR.message_types_by_name[name]


def _fields(desc: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in desc.fields}


def _enum_values(enum_type: object) -> dict[str, int]:
    return {v.name: v.number for v in enum_type.DESCRIPTOR.values}  # type: ignore[attr-defined]


def _alpha(obj: object) -> bool:
    opts = obj.GetOptions()  # type: ignore[attr-defined]
    for ext in (
        csi_pb2.alpha_field,
        csi_pb2.alpha_message,
        csi_pb2.alpha_method,
        csi_pb2.alpha_service,
        csi_pb2.alpha_enum,
        csi_pb2.alpha_enum_value,
    ):
        if ext.containing_type.full_name == opts.DESCRIPTOR.full_name:
            return bool(opts.Extensions[ext])
    raise AssertionError(f"no alpha option for {opts.DESCRIPTOR.full_name}")


# --------------------------------------------------------------------------- (a) regeneration


def test_regenerating_gives_byte_identical_stubs(tmp_path: Path) -> None:
    gen = _load_generator()
    assert gen.main([str(tmp_path)]) == 0
    for name in ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py"):
        assert (tmp_path / name).read_bytes() == (STUB_DIR / name).read_bytes(), (
            f"{name} is stale: run make proto"
        )
    assert not (tmp_path / "__init__.py").exists(), (
        "the generator must not write the hand-written package files"
    )


def test_grpc_module_imports_pb2_package_qualified() -> None:
    text = (STUB_DIR / "csi_pb2_grpc.py").read_text()
    assert "from elastivol.csi import csi_pb2 as csi__pb2" in text
    assert "\nimport csi_pb2" not in text
    assert getattr(csi_pb2_grpc, "csi__pb2") is csi_pb2  # noqa: B009


def test_contract_fingerprint_is_csi_v1_12_0() -> None:
    assert CSI_SPEC_VERSION == "1.12.0"
    assert hashlib.sha256(csi_pb2.DESCRIPTOR.serialized_pb).hexdigest() == CONTRACT_SHA256


# --------------------------------------------------------------------------- (b) spot checks


def test_file_level_facts() -> None:
    fd = csi_pb2.DESCRIPTOR
    assert fd.package == "csi.v1"
    assert fd.GetOptions().go_package == "github.com/container-storage-interface/spec/lib/go/csi"
    assert list(fd.services_by_name) == [
        "Identity",
        "Controller",
        "GroupController",
        "SnapshotMetadata",
        "Node",
    ]


def test_custom_option_extension_numbers() -> None:
    expected = {
        "csi_secret": (1059, "google.protobuf.FieldOptions"),
        "alpha_field": (1060, "google.protobuf.FieldOptions"),
        "alpha_enum": (1060, "google.protobuf.EnumOptions"),
        "alpha_enum_value": (1060, "google.protobuf.EnumValueOptions"),
        "alpha_message": (1060, "google.protobuf.MessageOptions"),
        "alpha_method": (1060, "google.protobuf.MethodOptions"),
        "alpha_service": (1060, "google.protobuf.ServiceOptions"),
    }
    got = {
        name: (ext.number, ext.containing_type.full_name)
        for name, ext in csi_pb2.DESCRIPTOR.extensions_by_name.items()
    }
    assert got == expected
    for ext in csi_pb2.DESCRIPTOR.extensions_by_name.values():
        assert ext.type == FieldDescriptor.TYPE_BOOL


def test_service_methods() -> None:
    methods = {s.name: [m.name for m in s.methods] for s in csi_pb2.DESCRIPTOR.services_by_name.values()}
    assert methods["Identity"] == ["GetPluginInfo", "GetPluginCapabilities", "Probe"]
    assert methods["Controller"] == [
        "CreateVolume",
        "DeleteVolume",
        "ControllerPublishVolume",
        "ControllerUnpublishVolume",
        "ValidateVolumeCapabilities",
        "ListVolumes",
        "GetCapacity",
        "ControllerGetCapabilities",
        "CreateSnapshot",
        "DeleteSnapshot",
        "ListSnapshots",
        "GetSnapshot",
        "ControllerExpandVolume",
        "ControllerGetVolume",
        "ControllerModifyVolume",
    ]
    assert methods["GroupController"] == [
        "GroupControllerGetCapabilities",
        "CreateVolumeGroupSnapshot",
        "DeleteVolumeGroupSnapshot",
        "GetVolumeGroupSnapshot",
    ]
    assert methods["SnapshotMetadata"] == ["GetMetadataAllocated", "GetMetadataDelta"]
    assert methods["Node"] == [
        "NodeStageVolume",
        "NodeUnstageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeGetVolumeStats",
        "NodeExpandVolume",
        "NodeGetCapabilities",
        "NodeGetInfo",
    ]
    for m in csi_pb2.DESCRIPTOR.services_by_name["SnapshotMetadata"].methods:
        assert m.server_streaming and not m.client_streaming


def test_alpha_markers_as_of_1_12_0() -> None:
    services = csi_pb2.DESCRIPTOR.services_by_name
    controller = services["Controller"].methods_by_name
    assert _alpha(controller["GetSnapshot"])
    assert _alpha(controller["ControllerGetVolume"])
    # ControllerModifyVolume became GA in 1.12.0.
    assert not _alpha(controller["ControllerModifyVolume"])
    assert not _alpha(_msg("ControllerModifyVolumeRequest"))
    assert not _alpha(_msg("CreateVolumeRequest").fields_by_name["mutable_parameters"])
    assert _alpha(services["SnapshotMetadata"])
    assert not _alpha(services["GroupController"])
    assert _alpha(_msg("GetSnapshotRequest")) and _alpha(_msg("VolumeCondition"))
    assert _alpha(_msg("GetCapacityResponse").fields_by_name["minimum_volume_size"])
    rpc_type = csi_pb2.ControllerServiceCapability.RPC.Type.DESCRIPTOR.values_by_name
    assert not _alpha(rpc_type["MODIFY_VOLUME"])
    assert _alpha(rpc_type["GET_SNAPSHOT"])


def test_create_volume_request_fields() -> None:
    desc = _msg("CreateVolumeRequest")
    assert _fields(desc) == {
        "name": 1,
        "capacity_range": 2,
        "volume_capabilities": 3,
        "parameters": 4,
        "secrets": 5,
        "volume_content_source": 6,
        "accessibility_requirements": 7,
        "mutable_parameters": 8,
    }
    assert secrets.is_secret(desc.fields_by_name["secrets"])
    assert not secrets.is_secret(desc.fields_by_name["parameters"])


def test_node_stage_and_publish_fields() -> None:
    stage = _msg("NodeStageVolumeRequest")
    assert _fields(stage) == {
        "volume_id": 1,
        "publish_context": 2,
        "staging_target_path": 3,
        "volume_capability": 4,
        "secrets": 5,
        "volume_context": 6,
    }
    assert secrets.is_secret(stage.fields_by_name["secrets"])
    assert _fields(_msg("NodePublishVolumeRequest")) == {
        "volume_id": 1,
        "publish_context": 2,
        "staging_target_path": 3,
        "target_path": 4,
        "volume_capability": 5,
        "readonly": 6,
        "secrets": 7,
        "volume_context": 8,
    }
    expand = _msg("NodeExpandVolumeRequest").fields_by_name["secrets"]
    assert expand.number == 6 and secrets.is_secret(expand) and _alpha(expand)


def test_access_modes() -> None:
    assert _enum_values(csi_pb2.VolumeCapability.AccessMode.Mode) == {
        "UNKNOWN": 0,
        "SINGLE_NODE_WRITER": 1,
        "SINGLE_NODE_READER_ONLY": 2,
        "MULTI_NODE_READER_ONLY": 3,
        "MULTI_NODE_SINGLE_WRITER": 4,
        "MULTI_NODE_MULTI_WRITER": 5,
        "SINGLE_NODE_SINGLE_WRITER": 6,
        "SINGLE_NODE_MULTI_WRITER": 7,
    }
    assert _fields(_msg("VolumeCapability")) == {"block": 1, "mount": 2, "access_mode": 3}
    assert _fields(csi_pb2.VolumeCapability.MountVolume.DESCRIPTOR) == {
        "fs_type": 1,
        "mount_flags": 2,
        "volume_mount_group": 3,
    }


def test_capability_enums() -> None:
    assert _enum_values(csi_pb2.PluginCapability.Service.Type) == {
        "UNKNOWN": 0,
        "CONTROLLER_SERVICE": 1,
        "VOLUME_ACCESSIBILITY_CONSTRAINTS": 2,
        "GROUP_CONTROLLER_SERVICE": 3,
        "SNAPSHOT_METADATA_SERVICE": 4,
    }
    assert _enum_values(csi_pb2.PluginCapability.VolumeExpansion.Type) == {
        "UNKNOWN": 0,
        "ONLINE": 1,
        "OFFLINE": 2,
    }
    assert _enum_values(csi_pb2.ControllerServiceCapability.RPC.Type) == {
        "UNKNOWN": 0,
        "CREATE_DELETE_VOLUME": 1,
        "PUBLISH_UNPUBLISH_VOLUME": 2,
        "LIST_VOLUMES": 3,
        "GET_CAPACITY": 4,
        "CREATE_DELETE_SNAPSHOT": 5,
        "LIST_SNAPSHOTS": 6,
        "CLONE_VOLUME": 7,
        "PUBLISH_READONLY": 8,
        "EXPAND_VOLUME": 9,
        "LIST_VOLUMES_PUBLISHED_NODES": 10,
        "VOLUME_CONDITION": 11,
        "GET_VOLUME": 12,
        "SINGLE_NODE_MULTI_WRITER": 13,
        "MODIFY_VOLUME": 14,
        "GET_SNAPSHOT": 15,
    }
    assert _enum_values(csi_pb2.NodeServiceCapability.RPC.Type) == {
        "UNKNOWN": 0,
        "STAGE_UNSTAGE_VOLUME": 1,
        "GET_VOLUME_STATS": 2,
        "EXPAND_VOLUME": 3,
        "VOLUME_CONDITION": 4,
        "SINGLE_NODE_MULTI_WRITER": 5,
        "VOLUME_MOUNT_GROUP": 6,
    }
    assert _enum_values(csi_pb2.GroupControllerServiceCapability.RPC.Type) == {
        "UNKNOWN": 0,
        "CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT": 1,
    }
    assert _enum_values(csi_pb2.BlockMetadataType) == {"UNKNOWN": 0, "FIXED_LENGTH": 1, "VARIABLE_LENGTH": 2}


def test_misc_field_numbers() -> None:
    assert _fields(_msg("ControllerPublishVolumeRequest")) == {
        "volume_id": 1,
        "node_id": 2,
        "volume_capability": 3,
        "readonly": 4,
        "secrets": 5,
        "volume_context": 6,
    }
    assert _fields(_msg("Snapshot")) == {
        "size_bytes": 1,
        "snapshot_id": 2,
        "source_volume_id": 3,
        "creation_time": 4,
        "ready_to_use": 5,
        "group_snapshot_id": 6,
    }
    assert _fields(_msg("NodeGetInfoResponse")) == {
        "node_id": 1,
        "max_volumes_per_node": 2,
        "accessible_topology": 3,
    }
    assert _fields(_msg("ControllerModifyVolumeRequest")) == {
        "volume_id": 1,
        "secrets": 2,
        "mutable_parameters": 3,
    }
    assert _fields(_msg("GetMetadataDeltaRequest")) == {
        "base_snapshot_id": 1,
        "target_snapshot_id": 2,
        "starting_offset": 3,
        "max_results": 4,
        "secrets": 5,
    }


def test_exactly_the_secrets_maps_are_secret() -> None:
    marked: set[str] = set()

    def walk(desc: Descriptor) -> None:
        for f in desc.fields:
            if secrets.is_secret(f):
                marked.add(f.full_name)
        for nested in desc.nested_types:
            walk(nested)

    for desc in csi_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(desc)
    named_secrets = {
        f"csi.v1.{name}.secrets"
        for name, desc in csi_pb2.DESCRIPTOR.message_types_by_name.items()
        if "secrets" in desc.fields_by_name
    }
    assert marked == named_secrets
    assert len(marked) == 19


# --------------------------------------------------------------------------- (c) redaction

SECRET = "hunter2"


def _assert_clean(data: dict[str, object]) -> str:
    text = json.dumps(data)
    assert SECRET not in text
    return text


def test_redact_create_volume_request() -> None:
    req = csi_pb2.CreateVolumeRequest(
        name="pvc-1",
        parameters={"type": "gp3"},
        secrets={"password": SECRET, "user": "bob"},
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
    )
    out = secrets.redact(req)
    _assert_clean(out)
    assert out["secrets"] == {"password": "***", "user": "***"}
    assert out["parameters"] == {"type": "gp3"}
    assert out["name"] == "pvc-1"
    assert out["capacity_range"] == {"required_bytes": str(1 << 30)}
    # The message itself is untouched.
    assert req.secrets["password"] == SECRET


def test_redact_node_stage_volume_request() -> None:
    req = csi_pb2.NodeStageVolumeRequest(
        volume_id="vol-1",
        staging_target_path="/stage",
        secrets={"chap-secret": SECRET},
        publish_context={"device": "/dev/loop7"},
        volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="xfs"),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        ),
    )
    out = secrets.redact(req)
    _assert_clean(out)
    assert out["secrets"] == {"chap-secret": "***"}
    assert out["volume_capability"]["access_mode"]["mode"] == "SINGLE_NODE_WRITER"
    assert out["publish_context"] == {"device": "/dev/loop7"}


@pytest.mark.parametrize(
    "name",
    sorted(n for n, d in csi_pb2.DESCRIPTOR.message_types_by_name.items() if "secrets" in d.fields_by_name),
)
def test_redact_every_message_with_secrets(name: str) -> None:
    cls = getattr(csi_pb2, name)
    msg = cls(secrets={"k": SECRET})
    out = secrets.redact(msg)
    _assert_clean(out)
    assert out == {"secrets": {"k": "***"}}
    assert secrets.secret_field_paths(cls.DESCRIPTOR) == ("secrets",)
    assert secrets.has_secrets(cls.DESCRIPTOR)


def test_redact_message_without_secrets_is_plain_message_to_dict() -> None:
    resp = csi_pb2.NodeGetInfoResponse(node_id="n1", max_volumes_per_node=7)
    assert not secrets.has_secrets(resp.DESCRIPTOR)
    assert secrets.redact(resp) == {"node_id": "n1", "max_volumes_per_node": "7"}
    assert secrets.redact(csi_pb2.CreateVolumeRequest()) == {}


def _nested_test_types() -> tuple[Any, Any]:
    """Message types that nest csi_secret fields below the top level (CSI itself has none)."""
    pool = descriptor_pool.Default()
    name = "elastivol_test/nested_secrets.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(name=name, package="elastivol.test", syntax="proto3")
        fdp.dependency.append("csi.proto")
        str_t = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
        msg_t = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
        opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
        rep = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        secret = descriptor_pb2.FieldOptions()
        secret.Extensions[csi_pb2.csi_secret] = True

        inner = fdp.message_type.add(name="Inner")
        inner.field.add(name="token", number=1, type=str_t, label=opt, options=secret)
        inner.field.add(name="keys", number=2, type=str_t, label=rep, options=secret)
        inner.field.add(name="plain", number=3, type=str_t, label=opt)

        outer = fdp.message_type.add(name="Outer")
        entry = outer.nested_type.add(name="ByNameEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=str_t, label=opt)
        entry.field.add(name="value", number=2, type=msg_t, label=opt, type_name=".elastivol.test.Inner")
        outer.field.add(name="one", number=1, type=msg_t, label=opt, type_name=".elastivol.test.Inner")
        outer.field.add(name="many", number=2, type=msg_t, label=rep, type_name=".elastivol.test.Inner")
        outer.field.add(
            name="by_name", number=3, type=msg_t, label=rep, type_name=".elastivol.test.Outer.ByNameEntry"
        )
        outer.field.add(name="req", number=4, type=msg_t, label=opt, type_name=".csi.v1.CreateVolumeRequest")
        outer.field.add(name="note", number=5, type=str_t, label=opt)
        pool.Add(fdp)
    inner_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("elastivol.test.Inner"))
    outer_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("elastivol.test.Outer"))
    return inner_cls, outer_cls


def test_redact_secrets_at_any_depth() -> None:
    inner_cls, outer_cls = _nested_test_types()

    def inner() -> object:
        return inner_cls(token=SECRET, keys=[SECRET, SECRET], plain="visible")

    msg = outer_cls(note="n")
    msg.one.CopyFrom(inner())
    msg.many.add().CopyFrom(inner())
    msg.many.add().CopyFrom(inner())
    msg.by_name["a"].CopyFrom(inner())
    msg.req.secrets["password"] = SECRET

    out = secrets.redact(msg)
    text = _assert_clean(out)
    redacted_inner = {"token": "***", "keys": ["***", "***"], "plain": "visible"}
    assert out["one"] == redacted_inner
    assert out["many"] == [redacted_inner, redacted_inner]
    assert out["by_name"] == {"a": redacted_inner}
    assert out["req"] == {"secrets": {"password": "***"}}
    assert out["note"] == "n"
    assert text.count("visible") == 4
    assert secrets.secret_field_paths(outer_cls.DESCRIPTOR) == (
        "one.token",
        "one.keys",
        "many[].token",
        "many[].keys",
        "by_name{}.token",
        "by_name{}.keys",
        "req.secrets",
    )


def test_redact_is_fast() -> None:
    req = csi_pb2.NodePublishVolumeRequest(
        volume_id="vol-1",
        target_path="/t",
        secrets={f"k{i}": SECRET for i in range(8)},
        volume_context={f"c{i}": "v" for i in range(8)},
    )
    secrets.redact(req)  # warm the per-descriptor cache
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        secrets.redact(req)
    per_call = (time.perf_counter() - start) / n
    # Generous bound (a few hundred microseconds); catches accidental per-call
    # descriptor walks, not machine noise.
    assert per_call < 0.002
