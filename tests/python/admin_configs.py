"""confluent-kafka's AdminClient altering topic configs as its users do:
incremental_alter_configs (SET, DELETE), alter_configs (the older, whole-set
replacing API), validate_only, and an internal topic refused; each checked
with describe_configs. BOOTSTRAP names the server."""

import os

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]})
for f in admin.create_topics([NewTopic("cfg", 1)]).values():
    f.result()
topic = ConfigResource(ConfigResource.Type.TOPIC, "cfg")


def show(*keys):
    entries = list(admin.describe_configs([topic]).values())[0].result()
    print(" ".join(f"{k}={entries[k].value}" for k in keys))


def alter_incremental(entries, validate_only=False):
    res = ConfigResource(ConfigResource.Type.TOPIC, "cfg", incremental_configs=entries)
    for f in admin.incremental_alter_configs([res], validate_only=validate_only).values():
        f.result()


alter_incremental(
    [
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
    ]
)
show("retention.ms", "cleanup.policy")
alter_incremental([ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)], True)
show("retention.ms")
alter_incremental([ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE)])
show("retention.ms", "cleanup.policy")
try:
    alter_incremental([ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
except Exception as e:
    print("invalid", e.args[0].name())

# The older API: the given set replaces the topic's overrides.
legacy = ConfigResource(ConfigResource.Type.TOPIC, "cfg", set_config={"segment.bytes": "1048576"})
for f in admin.alter_configs([legacy]).values():
    f.result()
show("retention.ms", "segment.bytes")

internal = ConfigResource(
    ConfigResource.Type.TOPIC,
    "__consumer_offsets",
    incremental_configs=[ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)],
)
try:
    for f in admin.incremental_alter_configs([internal]).values():
        f.result()
except Exception as e:
    print("internal", e.args[0].name())
