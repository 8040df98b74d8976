"""The capacity plan (``raykd plan``): model shapes, memory and cache sizes per stage, placement on node types."""
