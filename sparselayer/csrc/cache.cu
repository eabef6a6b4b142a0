// Per-topology cache of the index layouts the kernels derive from W's index (the panel-packed nonzeros of
// spmm / spmm_t, the panel pointers of sddmm). A layer's index changes only when its topology evolves, while
// the kernels run every step, so rebuilding these per call (2 extra launches and ~6% of the 99% forward)
// was pure overhead.
//
// An entry is valid while every source tensor is the same live storage, at the same data pointer and size,
// with the same version counter (bumped by every in-place write through PyTorch). Entries hold only weak
// references to the sources' storage: a freed index expires its entries (purged on the next lookup) and,
// since the weak reference keeps the StorageImpl object itself allocated, its address cannot be reused by a
// new storage while the entry exists. Not cached: inference-mode tensors (no version counter) and calls made
// during CUDA graph capture (the layout must live as long as the graph, so it is built into the graph's pool).
// Writes that bypass the version counter (through `.data` or raw pointers) are not seen: replace the index
// tensors instead (SparseLinear.set_topology does).
#include "common.cuh"

#include <c10/core/Storage.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/util/intrusive_ptr.h>

#include <cstring>
#include <mutex>
#include <vector>

namespace sparselayer {
namespace {

constexpr size_t kMaxEntries = 64;

struct Source {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const c10::StorageImpl* impl;
  const void* data;
  int64_t numel;
  uint32_t version;
};

struct Entry {
  const char* kind;
  std::vector<Source> sources;
  std::array<int64_t, 4> params;
  int device;
  cudaStream_t stream;
  std::vector<at::Tensor> value;
  uint64_t last_use;
};

struct Cache {
  std::mutex mu;
  std::vector<Entry> entries;
  uint64_t clock = 0;
};

// Never destroyed: tensors freed by static destructors at exit would reach a CUDA runtime already shut down.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

bool cacheable(const at::Tensor& t) { return t.defined() && !t.is_inference() && t.has_storage(); }

Source source_of(const at::Tensor& t) {
  return Source{t.storage().getWeakStorageImpl(), t.storage().unsafeGetStorageImpl(), t.data_ptr(), t.numel(),
                t.unsafeGetTensorImpl()->version_counter().current_version()};
}

// The live entry for (kind, index, params), else make()'s value, stored (an empty vector when make is null).
std::vector<at::Tensor> cache_lookup(const char* kind, const std::vector<at::Tensor>& index,
                                     std::array<int64_t, 4> params,
                                     const std::function<std::vector<at::Tensor>()>* make_ptr) {
  const auto make = [&]() { return make_ptr ? (*make_ptr)() : std::vector<at::Tensor>(); };
  bool use = !index.empty() && env_int("SPARSELAYER_NO_CACHE") != 1;  // 1: rebuild per call (benchmarks)
  for (const auto& t : index) use = use && cacheable(t);
  if (use && c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) use = false;
  if (!use) return make();

  std::vector<Source> sources;
  sources.reserve(index.size());
  for (const auto& t : index) sources.push_back(source_of(t));
  const int device = c10::cuda::current_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  // Same kind, parameters, device, stream and source storages: `live` also compares versions.
  auto same_slot = [&](const Entry& e, bool live) {
    if (std::strcmp(e.kind, kind) != 0 || e.params != params || e.device != device || e.stream != stream ||
        e.sources.size() != sources.size())
      return false;
    for (size_t i = 0; i < sources.size(); ++i) {
      const Source &a = e.sources[i], &b = sources[i];
      if (a.impl != b.impl || a.data != b.data || a.numel != b.numel) return false;
      if (live && (a.version != b.version || a.storage.expired())) return false;
    }
    return true;
  };
  auto& c = cache();
  std::vector<Entry> dropped;  // freed after the lock is released
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (size_t i = 0; i < c.entries.size();) {  // purge entries whose index was freed
      bool expired = false;
      for (const auto& s : c.entries[i].sources) expired = expired || s.storage.expired();
      if (expired) {
        dropped.push_back(std::move(c.entries[i]));
        c.entries[i] = std::move(c.entries.back());
        c.entries.pop_back();
      } else {
        ++i;
      }
    }
    for (auto& e : c.entries) {
      if (same_slot(e, true)) {
        e.last_use = ++c.clock;
        return e.value;
      }
    }
  }
  if (!make_ptr) return {};
  std::vector<at::Tensor> value = make();
  std::lock_guard<std::mutex> lock(c.mu);
  for (size_t i = 0; i < c.entries.size();) {  // the same index at an older version: replaced
    if (same_slot(c.entries[i], false)) {
      dropped.push_back(std::move(c.entries[i]));
      c.entries[i] = std::move(c.entries.back());
      c.entries.pop_back();
    } else {
      ++i;
    }
  }
  if (c.entries.size() >= kMaxEntries) {
    size_t oldest = 0;
    for (size_t i = 1; i < c.entries.size(); ++i)
      if (c.entries[i].last_use < c.entries[oldest].last_use) oldest = i;
    dropped.push_back(std::move(c.entries[oldest]));
    c.entries[oldest] = std::move(c.entries.back());
    c.entries.pop_back();
  }
  c.entries.push_back(Entry{kind, std::move(sources), params, device, stream, value, ++c.clock});
  return value;
}

}  // namespace

std::vector<at::Tensor> cached_layout(const char* kind, const std::vector<at::Tensor>& index,
                                      std::array<int64_t, 4> params,
                                      const std::function<std::vector<at::Tensor>()>& make) {
  return cache_lookup(kind, index, params, &make);
}

std::vector<at::Tensor> find_cached_layout(const char* kind, const std::vector<at::Tensor>& index,
                                           std::array<int64_t, 4> params) {
  return cache_lookup(kind, index, params, nullptr);
}

}  // namespace sparselayer
