"""Trainers: one per `model.kind`, found through the registry, never through dotted imports."""
