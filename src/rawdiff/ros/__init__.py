"""The ROS side of rawdiff (the only package that imports rospy, rosbag or messages).

    conversions   sensor_msgs/Image <-> RawFrame / RGB arrays
    transcode     one message through the codec (the nodes' and the bags' code path)
    node          the nodes' skeleton: parameters, drop-oldest queue, worker, diagnostics
    diagnostics   counters, rates, latency, throttled errors, /diagnostics status, and
                  diagnostic_updater's rate and stamp checks of a topic (TopicStatus)
    camera_info   the calibration beside the codes: relayed by the encoder, one per
                  decoded image (same stamp and frame_id) from the decoder
    encoder_node  image_raw -> compressed_codes        (scripts/encoder_node)
    decoder_node  compressed_codes -> image_decoded    (scripts/decoder_node)
    bag           bag I/O: topics, the RAW frames of an image topic, and the reader of bag
                  sources (it registers itself with rawdiff.data.readers on import)
    bag_transcode `rawdiff bag encode|decode`: a whole bag through the codec, no roscore
    tools/        not the runtime: process helpers (roscore, roslaunch) and ``make demo``

ROS modules are imported inside functions, so ``import rawdiff.ros.bag`` (and the
``rawdiff`` command line) works where ROS is not installed until a bag is touched.
"""
