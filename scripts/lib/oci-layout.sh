# Sourced by the check scripts: oci_layout DIR WORK writes an OCI image layout to DIR holding two
# images made here with real gzip'd tar layers (2 MB of random data each): "single" (linux/amd64)
# and "multi" (an index of linux/amd64 and linux/arm64). WORK is a scratch folder.
oci_layout() {
  local L=$1 W=$2
  mkdir -p "$L/blobs/sha256"; echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
  _put() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$L/blobs/sha256/$h"; echo "$h"; }
  _image() { # arch -> "digest size" of its manifest
    local d; d=$(mktemp -d -p "$W"); mkdir -p "$d/root/etc"
    echo "hello from $1" > "$d/root/etc/hello"; head -c 2000000 /dev/urandom > "$d/root/etc/data"
    tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$d/root" -cf "$d/layer.tar" etc
    local diff; diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1); gzip -n -c "$d/layer.tar" > "$d/layer.tgz"
    local lh ls ch cs; lh=$(_put "$d/layer.tgz"); ls=$(stat -c%s "$d/layer.tgz")
    printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$1" "$diff" > "$d/config.json"
    ch=$(_put "$d/config.json"); cs=$(stat -c%s "$d/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$ch" "$cs" "$lh" "$ls" > "$d/manifest.json"
    echo "$(_put "$d/manifest.json") $(stat -c%s "$d/manifest.json")"
  }
  local s1 z1 a1 y1 a2 y2 ih is
  read -r s1 z1 < <(_image amd64); read -r a1 y1 < <(_image amd64); read -r a2 y2 < <(_image arm64)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"arm64","os":"linux"}}]}' "$a1" "$y1" "$a2" "$y2" > "$W/index.json"
  ih=$(_put "$W/index.json"); is=$(stat -c%s "$W/index.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"single"}},{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"multi"}}]}' "$s1" "$z1" "$ih" "$is" > "$L/index.json"
}
