"""rawdiff: learned compression of RAW Bayer camera frames for ROS.

The core (``rawdiff.raw``, ``rawdiff.models``, ``rawdiff.codec``, ...) needs no ROS;
only ``rawdiff.ros`` imports rospy. The generated message module ``rawdiff.msg`` lives
in the catkin devel space, which ``extend_path`` joins to this package.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
