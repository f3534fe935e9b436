// The CUDA execution model on the host, for testing the kernels without a GPU.
//
// A kernel file is compiled by the host C++ compiler after this header (and common.cuh); the
// CUDA keywords become plain C++ and the built-ins below emulate a GPU closely enough to run
// the kernels unchanged:
// - blocks run one after another; the warps of a block run one after another (the kernels
//   never synchronise across warps — this header has no __syncthreads, so a kernel that does
//   fails to compile here);
// - the 32 lanes of a warp are fibers on the calling thread (started with makecontext,
//   switched with _setjmp/_longjmp, which skip swapcontext's signal-mask system call). A lane
//   runs until it reaches a warp-synchronous built-in (__shfl_xor_sync, __all_sync,
//   __syncwarp), where it yields; when every lane has arrived, the round ends and the next
//   begins. Lanes that reach different built-ins, or some a built-in while others have exited,
//   are reported as a divergence error — on a GPU that would be undefined behaviour;
// - lanes run in a new pseudo-random order every round, so a kernel that reads another lane's
//   shared-memory write without a __syncwarp between them sees old or new values at random
//   and fails its comparison;
// - dynamic shared memory is filled with NaN before every block, so reading it before writing
//   it shows.
// All state is thread_local: tests on different threads emulate independently.

#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

// CUDA's integer min and max are global functions.
using std::max;
using std::min;

// common.cuh defines these for NVRTC, which has no <math.h>.
#undef INFINITY
#undef NAN

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ thread_local

struct uint3 {
    unsigned x, y, z;
};

namespace emu {

constexpr int kWarp = 32;
// Dynamic shared memory of one block: the 48 KiB every CUDA GPU gives without opt-in.
constexpr size_t kSharedBytes = 48 * 1024;
constexpr size_t kLaneStack = 256 * 1024;

enum class Sync { None, Shuffle, All, Warp, Exited };

struct Lane {
    ucontext_t start;   // entry on the lane's own stack
    jmp_buf resume;     // where the lane waits at a built-in
    std::vector<char> stack;
    bool started;
    Sync waiting;
};

thread_local uint3 thread_idx, block_idx, block_dim, grid_dim;
thread_local ucontext_t scheduler_start;  // only for swapcontext's first switch
thread_local jmp_buf scheduler;
thread_local Lane lanes[kWarp];
thread_local int current;
thread_local const std::function<void()>* body;
thread_local float float_slots[kWarp];
thread_local int int_slots[kWarp];
thread_local uint64_t order_state = 0x9E3779B97F4A7C15ull;

inline uint64_t next_random() {
    order_state ^= order_state << 13;
    order_state ^= order_state >> 7;
    order_state ^= order_state << 17;
    return order_state;
}

// Suspends the current lane at a warp-synchronous point of kind `kind`.
inline void arrive(Sync kind) {
    lanes[current].waiting = kind;
    if (!_setjmp(lanes[current].resume)) _longjmp(scheduler, 1);
}

inline void lane_main() {
    (*body)();
    lanes[current].waiting = Sync::Exited;
    _longjmp(scheduler, 1);
}

// Runs warp `warp` of the current block to completion. Returns false on divergence.
inline bool run_warp(unsigned warp) {
    int order[kWarp];
    for (int l = 0; l < kWarp; ++l) {
        Lane& lane = lanes[l];
        if (lane.stack.empty()) lane.stack.resize(kLaneStack);
        getcontext(&lane.start);
        lane.start.uc_stack.ss_sp = lane.stack.data();
        lane.start.uc_stack.ss_size = lane.stack.size();
        lane.start.uc_link = nullptr;  // lane_main never returns
        makecontext(&lane.start, lane_main, 0);
        lane.started = false;
        lane.waiting = Sync::None;
        order[l] = l;
    }
    for (;;) {
        // A fresh lane order every round (Fisher-Yates).
        for (int l = kWarp - 1; l > 0; --l) {
            const int j = (int)(next_random() % (uint64_t)(l + 1));
            std::swap(order[l], order[j]);
        }
        for (int i = 0; i < kWarp; ++i) {
            const int l = order[i];
            if (lanes[l].waiting == Sync::Exited) continue;
            current = l;
            thread_idx = uint3{warp * kWarp + (unsigned)l, 0, 0};
            if (!_setjmp(scheduler)) {
                if (lanes[l].started) _longjmp(lanes[l].resume, 1);
                lanes[l].started = true;
                swapcontext(&scheduler_start, &lanes[l].start);
            }
        }
        const Sync first = lanes[0].waiting;
        for (int l = 1; l < kWarp; ++l) {
            if (lanes[l].waiting != first) return false;
        }
        if (first == Sync::Exited) return true;
    }
}

// Calls `f` with arguments read from `args`, the driver's convention: args[i] points at the
// value of parameter i.
template <typename... P, size_t... I>
void call_with(void (*f)(P...), void** args, std::index_sequence<I...>) {
    f(*static_cast<P*>(args[I])...);
}
template <typename... P>
void call(void (*f)(P...), void** args) {
    call_with(f, args, std::index_sequence_for<P...>{});
}

}  // namespace emu

// The block's dynamic shared memory, which kernels declare as `extern __shared__ float shared[];`
// (with __shared__ defined as thread_local above).
extern "C" {
alignas(16) thread_local float shared[emu::kSharedBytes / sizeof(float)];
}

namespace emu {

// Runs a grid of `grid` blocks of `block` threads. 0: done; 1: divergence; 2: bad launch.
inline int launch(unsigned grid, unsigned block, unsigned shared_bytes,
                  const std::function<void()>& kernel) {
    if (block == 0 || block % kWarp != 0 || block > 1024 || shared_bytes > kSharedBytes) return 2;
    body = &kernel;
    grid_dim = uint3{grid, 1, 1};
    block_dim = uint3{block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        block_idx = uint3{b, 0, 0};
        for (size_t i = 0; i < shared_bytes / sizeof(float); ++i) ::shared[i] = __builtin_nanf("");
        for (unsigned w = 0; w < block / kWarp; ++w) {
            if (!run_warp(w)) return 1;
        }
    }
    return 0;
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline float __int_as_float(int bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

inline unsigned __float_as_uint(float value) {
    unsigned bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline float __shfl_xor_sync(unsigned mask, float value, int offset) {
    if (mask != 0xffffffffu) __builtin_trap();  // the kernels only use full warps
    emu::float_slots[emu::current] = value;
    emu::arrive(emu::Sync::Shuffle);  // every lane has written its value
    const float partner = emu::float_slots[emu::current ^ offset];
    emu::arrive(emu::Sync::Shuffle);  // every lane has read before the slots are reused
    return partner;
}

inline int __all_sync(unsigned mask, int predicate) {
    if (mask != 0xffffffffu) __builtin_trap();
    emu::int_slots[emu::current] = predicate != 0;
    emu::arrive(emu::Sync::All);
    int all = 1;
    for (int l = 0; l < emu::kWarp; ++l) all = all && emu::int_slots[l];
    emu::arrive(emu::Sync::All);
    return all;
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) __builtin_trap();
    emu::arrive(emu::Sync::Warp);
}

// One exported entry per kernel: `emulated_<name>(grid, block, shared_bytes, args)`.
#define EMULATE(name)                                                                  \
    extern "C" int emulated_##name(unsigned grid, unsigned block, unsigned shared_bytes, \
                                   void** args) {                                      \
        return emu::launch(grid, block, shared_bytes, [&] { emu::call(name, args); });   \
    }
