// libonebox.so, the LD_PRELOAD shim. For now it interposes nothing: loading it
// must leave every program's behaviour unchanged (tests/integration check that
// `ls -la /` under it prints what plain `ls` prints). The file, process and
// socket families join here, one file per family, with the shim issue.
namespace {
__attribute__((constructor)) void OneboxShimInit() {}
}  // namespace
