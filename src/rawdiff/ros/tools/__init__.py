"""Tools around the ROS runtime, not part of it: they start processes and write reports.

    processes   a private roscore on a free port, roslaunch, each in its own process group
    demo        ``make demo``: the pipeline on a bag of RAW frames, with a report
                (``python -m rawdiff.ros.tools.demo``)

The nodes never import these; the demo and the integration tests (test/ros) do.
"""
