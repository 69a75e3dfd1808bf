"""Qt-free parts of the UNETRPPSegment Slicer module.

``process`` runs the ``unetrpp`` child process, ``logic`` moves MRML nodes to files and back,
``review`` summarises a result for the review table and ``qt_timer`` drives polling from Qt.
Only ``qt_timer`` imports Qt, so everything else is tested against the Slicer core with pytest.
"""
