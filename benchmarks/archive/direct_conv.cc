// A plain direct 3x3 convolution (NHWC, float32, zero padding 1, stride 1 or 2), forward only:
// what a hand-written kernel reaches without oneDNN-style JIT blocking, beside XLA:CPU's
// forward (benchmarks/studies/conv_parts/conv_parts.py) and PyTorch's (issue 14: is a custom kernel through
// jax.ffi a quick way past XLA:CPU's small-channel convolutions?).
//
//     g++ -O3 -march=native -std=c++17 -pthread benchmarks/archive/direct_conv.cc -o /tmp/direct_conv
//     for s in "48 32 4 16 1" "48 32 16 16 2" "24 16 16 32 1" "24 16 32 32 2" "24 16 16 16 1" \
//              "12 8 32 32 1"; do /tmp/direct_conv $s 2; done
//
// Arguments: H W Cin Cout stride threads (batch 128 maps, the demo's 16 volumes x 8 slices;
// Cout 16 or 32). Each output row is a block of PB pixels x Cout/16 AVX-512 accumulators; the
// input value is broadcast, the kernel row loaded once per block. Prints the median of 30 calls.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <chrono>
#include <random>
#include <thread>
typedef float v16 __attribute__((vector_size(64), aligned(4)));

template <int CO16, int S, int PB>
static void conv_rows(const float* x, const float* w, float* y, int H, int W, int Ci,
                      int Ho, int Wo, int oh0, int oh1) {
  // x: (H, W, Ci) one image; w: (3,3,Ci,CO16*16); y: (Ho, Wo, CO16*16)
  const int Co = CO16 * 16;
  for (int oh = oh0; oh < oh1; ++oh) {
    for (int ow0 = 0; ow0 < Wo; ow0 += PB) {
      const int nb = (Wo - ow0) < PB ? (Wo - ow0) : PB;
      v16 acc[PB][CO16];
      for (int p = 0; p < PB; ++p) for (int c = 0; c < CO16; ++c) acc[p][c] = (v16){};
      for (int kh = 0; kh < 3; ++kh) {
        const int ih = oh * S + kh - 1;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < 3; ++kw) {
          const float* wk = w + ((kh * 3 + kw) * Ci) * Co;
          for (int ci = 0; ci < Ci; ++ci) {
            v16 wv[CO16];
            for (int c = 0; c < CO16; ++c) memcpy(&wv[c], wk + ci * Co + c * 16, 64);
            for (int p = 0; p < PB; ++p) {
              if (p >= nb) break;
              const int iw = (ow0 + p) * S + kw - 1;
              if (iw < 0 || iw >= W) continue;
              const float xv = x[(ih * W + iw) * Ci + ci];
              for (int c = 0; c < CO16; ++c) acc[p][c] += xv * wv[c];
            }
          }
        }
      }
      for (int p = 0; p < nb; ++p)
        for (int c = 0; c < CO16; ++c) memcpy(y + ((oh * Wo + ow0 + p) * Co) + c * 16, &acc[p][c], 64);
    }
  }
}

int main(int argc, char** argv) {
  int N = 128, H = atoi(argv[1]), W = atoi(argv[2]), Ci = atoi(argv[3]), Co = atoi(argv[4]), S = atoi(argv[5]);
  int nth = argc > 6 ? atoi(argv[6]) : 1;
  int Ho = (H + S - 1) / S, Wo = (W + S - 1) / S;
  std::vector<float> x(N * H * W * Ci), w(9 * Ci * Co), y(N * Ho * Wo * Co);
  std::mt19937 g(0); std::normal_distribution<float> d;
  for (auto& v : x) v = d(g); for (auto& v : w) v = d(g);
  auto run = [&]() {
    auto body = [&](int n0, int n1) {
      for (int n = n0; n < n1; ++n) {
        const float* xi = x.data() + (size_t)n * H * W * Ci; float* yi = y.data() + (size_t)n * Ho * Wo * Co;
        if (Co == 16 && S == 1) conv_rows<1, 1, 8>(xi, w.data(), yi, H, W, Ci, Ho, Wo, 0, Ho);
        if (Co == 16 && S == 2) conv_rows<1, 2, 8>(xi, w.data(), yi, H, W, Ci, Ho, Wo, 0, Ho);
        if (Co == 32 && S == 1) conv_rows<2, 1, 6>(xi, w.data(), yi, H, W, Ci, Ho, Wo, 0, Ho);
        if (Co == 32 && S == 2) conv_rows<2, 2, 6>(xi, w.data(), yi, H, W, Ci, Ho, Wo, 0, Ho);
      }
    };
    if (nth == 1) body(0, N); else { std::thread t(body, 0, N / 2); body(N / 2, N); t.join(); }
  };
  run();
  std::vector<double> ts;
  for (int r = 0; r < 30; ++r) { auto t0 = std::chrono::steady_clock::now(); run();
    ts.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count()); }
  std::sort(ts.begin(), ts.end());
  // the first map against a scalar loop (same zero padding): the kernel computes the right thing
  double err = 0;
  for (int oh = 0; oh < Ho; ++oh) for (int ow = 0; ow < Wo; ++ow) for (int co = 0; co < Co; ++co) {
    double ref = 0;
    for (int kh = 0; kh < 3; ++kh) for (int kw = 0; kw < 3; ++kw) for (int ci = 0; ci < Ci; ++ci) {
      int ih = oh * S + kh - 1, iw = ow * S + kw - 1;
      if (ih >= 0 && ih < H && iw >= 0 && iw < W)
        ref += (double)x[(ih * W + iw) * Ci + ci] * w[((kh * 3 + kw) * Ci + ci) * Co + co];
    }
    err = std::max(err, std::fabs(ref - y[(oh * Wo + ow) * Co + co]));
  }
  double fl = 2.0 * N * Ho * Wo * 9 * Ci * Co;
  printf("%dx%dx%d %d->%d s%d th%d: %.3f ms  %.1f GFLOP/s  (max |error| vs scalar loop %.1e)\n",
         N, H, W, Ci, Co, S, nth, ts[15], fl / ts[15] / 1e6, err);
}
