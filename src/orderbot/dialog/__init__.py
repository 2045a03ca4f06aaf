"""The dialog: a pure engine driven by flows that are data (YAML), with named validators.

Each name has one home: :mod:`.engine` (``step``), :mod:`.models` (what crosses the engine's
boundary), :mod:`.flow` (the loaded :class:`~orderbot.dialog.flow.Flow`), :mod:`.loader` (YAML),
:mod:`.validators`.
"""
