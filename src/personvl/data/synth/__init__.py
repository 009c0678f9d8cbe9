"""The synthetic person world: identities, cameras, captions, attributes, part masks, scenes."""

from personvl.data.synth.world import WorldConfig, generate_world, load_world, read_world_records

__all__ = ["WorldConfig", "generate_world", "load_world", "read_world_records"]
