"""The teacher-logit cache: its schema and manifest (``schema``), its object-store copy (``store``) and
the teacher pass that fills it (``scorer``)."""
