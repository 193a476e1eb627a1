"""Diffusion schedules and samplers: pure functions, no ``nn.Module``, no weights."""
