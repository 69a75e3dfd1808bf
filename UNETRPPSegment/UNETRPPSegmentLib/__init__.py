"""Qt-free parts of the UNETRPPSegment Slicer module.

``process`` runs the ``unetrpp`` child process, ``logic`` drives one segmentation (request, job, progress),
``nodes`` moves MRML nodes to files and back, ``review`` summarises a result for the review table,
``dependencies`` checks and installs Python packages and ``sample_data`` offers the demo's phantom in
Slicer's Sample Data module. Only ``qt_timer`` imports Qt, so everything else is tested against the
Slicer core with pytest.
"""
