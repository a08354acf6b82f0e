// A CUDA device for a CPU-only PyTorch, for tests/test_gpu_rehearsal.py: enough for fake CUDA
// tensors (FakeTensorMode) to run a backward. A CPU build has no CUDA device guard (autograd asks
// it for the device's stream) and its CUDA hooks answer "no CUDA" (autograd asks them which
// accelerator there is). enable() registers c10's FakeGuardImpl as the CUDA guard and turns the
// hooks' answers to yes; disable() undoes both. Nothing here touches a real GPU.
#include <torch/extension.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

#include <new>

namespace {

bool enabled = false;
c10::impl::FakeGuardImpl<c10::DeviceType::CUDA> guard;

std::atomic<const c10::impl::DeviceGuardImplInterface*>& cuda_guard_slot() {
  return c10::impl::device_guard_impl_registry[static_cast<size_t>(c10::DeviceType::CUDA)];
}

// The hooks a CPU build made at start-up are the base class's; these answer "yes" while enabled.
struct RehearsalHooks : at::CUDAHooksInterface {
  bool hasCUDA() const override { return enabled; }
  bool isBuilt() const override { return enabled; }
  bool isAvailable() const override { return enabled; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return enabled; }
  c10::DeviceIndex deviceCount() const override { return enabled ? 1 : 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  c10::DeviceIndex current_device() const override { return 0; }
  int getNumGPUs() const override { return enabled ? 1 : 0; }
};
static_assert(sizeof(RehearsalHooks) == sizeof(at::CUDAHooksInterface), "same object, new answers");

}  // namespace

bool enable() {
  const c10::impl::DeviceGuardImplInterface* none = nullptr;
  cuda_guard_slot().compare_exchange_strong(none, &guard);
  if (cuda_guard_slot().load() != &guard) return false;  // a real CUDA build: leave it alone
  auto& hooks = const_cast<at::CUDAHooksInterface&>(at::detail::getCUDAHooks());
  enabled = true;
  if (!hooks.hasCUDA()) new (&hooks) RehearsalHooks();  // same storage, this class's answers
  return hooks.hasCUDA();
}

void disable() {
  const c10::impl::DeviceGuardImplInterface* ours = &guard;
  cuda_guard_slot().compare_exchange_strong(ours, nullptr);
  enabled = false;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("enable", &enable, "a fake CUDA device: guard and hooks");
  m.def("disable", &disable, "back to a CPU-only PyTorch");
}
