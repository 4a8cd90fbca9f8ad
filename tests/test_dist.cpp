// Data-parallel pieces that one process can check: ghost batch norm (what N ranks with per-rank
// statistics compute), the gradient averager's buckets against a stand-in second rank, the loader's
// shards, the launcher's environment, and the records a resume compares. The runs under mpirun are
// tests/test_dist_mpi.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "data/data.h"
#include "engine/dist.h"
#include "gradcheck.h"
#include "nas/data_parallel.h"
#include "nas/run.h"

using namespace spnas;

namespace {

Var P(const Tensor& t) { return leaf(t, true); }

Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t per = t.numel() / s[0];
  s[0] = end - begin;
  Tensor out = Tensor::empty(s);
  std::memcpy(out.data(), t.data() + begin * per, size_t(out.numel()) * sizeof(float));
  return out;
}

bool same_bits(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, size_t(n) * sizeof(float)) == 0; }

struct GroupsScope {
  explicit GroupsScope(int g) { set_batchnorm_stats(BatchNormStats{g, false}); }
  ~GroupsScope() { set_batchnorm_stats(BatchNormStats{}); }
};

}  // namespace

TEST_CASE("ghost batch norm: each group normalised alone, as per-rank statistics would") {
  Rng rng(7);
  for (Act act : {Act::None, Act::ReLU6}) {
    CAPTURE(int(act));
    const Tensor X = random_tensor({4, 3, 2, 5}, rng, -2, 4), G = random_tensor({5}, rng, 0.5f, 2),
                 Bt = random_tensor({5}, rng, -0.5f, 0.5f), R = random_tensor({4, 3, 2, 5}, rng, 0.5f, 1.5f);
    BatchNorm grouped, half[2];
    for (BatchNorm* b : {&grouped, &half[0], &half[1]}) b->running_mean = Tensor::zeros({5}), b->running_var = Tensor::full({5}, 1.0f);

    // Two groups in one op.
    Var x = P(X.clone()), g = P(G.clone()), b = P(Bt.clone());
    {
      GroupsScope two(2);
      backward(sum(mul(batchnorm(x, g, b, grouped, true, act), constant(R))));
    }
    // Each half in an op of its own.
    Var gh = P(G.clone()), bh = P(Bt.clone());
    Tensor y_half[2], dx_half[2];
    for (int h = 0; h < 2; ++h) {
      Var xh = P(rows(X, 2 * h, 2 * h + 2));
      Var y = batchnorm(xh, gh, bh, half[h], true, act);
      y_half[h] = y->value;
      backward(sum(mul(y, constant(rows(R, 2 * h, 2 * h + 2)))));
      dx_half[h] = xh->grad;
    }
    const int64_t n = X.numel() / 2;
    CHECK(same_bits(x->grad.data(), dx_half[0].data(), n));
    CHECK(same_bits(x->grad.data() + n, dx_half[1].data(), n));
    for (int64_t c = 0; c < 5; ++c) {
      CHECK(g->grad.data()[c] == doctest::Approx(gh->grad.data()[c]).epsilon(1e-6));
      CHECK(b->grad.data()[c] == doctest::Approx(bh->grad.data()[c]).epsilon(1e-6));
      // The running statistics move by the mean of the groups' statistics.
      CHECK(grouped.running_mean.data()[c] ==
            doctest::Approx((half[0].running_mean.data()[c] + half[1].running_mean.data()[c]) / 2).epsilon(1e-6));
      CHECK(grouped.running_var.data()[c] ==
            doctest::Approx((half[0].running_var.data()[c] + half[1].running_var.data()[c]) / 2).epsilon(1e-6));
    }
    // And it is a gradient, through the pointwise convolution's fallback too.
    GroupsScope two(2);
    GradCheckOptions o;
    o.eps = 1e-3f;
    o.atol = 5e-3f;
    BatchNorm bn = grouped;
    CHECK(gradcheck("ghost batchnorm", {P(X.clone()), P(G.clone()), P(Bt.clone())},
                    [&](auto& v) { return batchnorm(v[0], v[1], v[2], bn, true, act); }, o) == 0);
    Var w = P(random_tensor({5, 3}, rng));
    CHECK(gradcheck("ghost bn_act_pwconv", {P(X.clone()), P(G.clone()), P(Bt.clone()), w},
                    [&](auto& v) { return bn_act_pwconv(v[0], v[1], v[2], bn, true, act, v[3]); }, o) == 0);
  }
  GroupsScope three(3);
  BatchNorm bn;
  bn.running_mean = Tensor::zeros({2}), bn.running_var = Tensor::full({2}, 1.0f);
  CHECK_THROWS_WITH(batchnorm(P(Tensor::zeros({4, 2, 2, 2})), P(Tensor::full({2}, 1.0f)), P(Tensor::zeros({2})), bn, true),
                    doctest::Contains("--bn-groups 3 does not divide the batch of 4"));
}

namespace {

// A stand-in for a second rank: every sum adds `other` (that rank's data) and notes whether
// backward was still walking the tape when the sum started.
struct TwoRanks : Communicator {
  int size() const override { return 2; }
  OpHandle start_sum(float* data, size_t n, Stream, std::string what) override {
    during_backward.push_back(tape_size() > 0);
    names.push_back(what);
    for (size_t i = 0; i < n; ++i) data[i] += other(names.size(), i);
    return Communicator::start_sum(data, n, Stream::Gradients, what);
  }
  std::function<float(size_t, size_t)> other = [](size_t, size_t) { return 0.0f; };
  std::vector<bool> during_backward;
  std::vector<std::string> names;
};

// Three layers of a small network, so backward completes the last layer's gradients first.
struct Chain {
  ParamSet ps;
  std::vector<Var> w;
  Chain() {
    Rng rng(3);
    for (int i = 0; i < 3; ++i) w.push_back(ps.add("w" + std::to_string(i), random_tensor({6, 6}, rng)));
    ps.add("unused", Tensor::full({2}, 1.0f));  // gets no gradient: counts as zero
  }
  Var loss(const Tensor& x) {
    Var h = constant(x);
    for (const Var& wi : w) h = relu(pwconv(h, wi));
    return sum(h);
  }
};

}  // namespace

TEST_CASE("gradient averager: buckets start during backward, every gradient becomes the ranks' mean") {
  Rng rng(5);
  const Tensor x = random_tensor({4, 1, 1, 6}, rng, 0, 1);
  Chain plain;
  backward(plain.loss(x));

  Chain chain;
  TwoRanks comm;
  // The other rank's gradients are all ones; every fifth sum is the stop request (nobody asks).
  comm.other = [](size_t call, size_t) { return call % 5 == 0 ? 0.0f : 1.0f; };
  GradientAverager avg(chain.ps, comm, /*average_buffers=*/false, /*bucket_bytes=*/4);  // one parameter per bucket
  CHECK(avg.stats().buckets == 4);
  avg.backward(chain.loss(x));
  REQUIRE(comm.names.size() == 5);  // four buckets and the stop request
  // Every bucket starts before the walk has ended, the one no rule writes to first, then the last
  // layer's; the stop request after it.
  CHECK(comm.names[0].find("bucket 1 of 4") != std::string::npos);
  for (int i = 0; i < 4; ++i) CHECK(comm.during_backward[size_t(i)]);
  CHECK_FALSE(comm.during_backward[4]);
  for (int i = 0; i < 3; ++i)
    for (int64_t k = 0; k < 36; ++k)
      CHECK(chain.w[size_t(i)]->grad.data()[k] == doctest::Approx((plain.w[size_t(i)]->grad.data()[k] + 1) / 2));
  const Param* unused = chain.ps.find("unused");
  CHECK(unused->var->grad_valid);
  CHECK(unused->var->grad.data()[0] == 0.5f);
  CHECK(avg.stop_signal() == 0);

  // Another rank asked to stop (SIGTERM): this one learns it in the same step.
  comm.other = [&](size_t call, size_t i) { return call % 5 == 0 && i == 1 ? 1.0f : 0.0f; };
  chain.ps.zero_grad();
  avg.backward(chain.loss(x), 0);
  CHECK(avg.stop_signal() == 15);
  chain.ps.zero_grad();
  avg.backward(chain.loss(x), 2);
  CHECK(avg.stop_signal() == 2);
}

TEST_CASE("--bucket-mb reaches the averager of a data-parallel step") {
  Chain chain;  // three 36-float weights and a 2-float unused one: 4 buckets at 1 float each
  TwoRanks comm;
  ParallelConfig pc;
  CHECK(DataParallelStep(chain.ps, pc, comm).averager().stats().buckets == 1);  // 4 MB holds them all
  pc.bucket_mb = 4.0 / (1 << 20);
  CHECK(DataParallelStep(chain.ps, pc, comm).averager().stats().buckets == 4);
  pc.bucket_mb = 37 * 4.0 / (1 << 20);  // filled from the last: 2 + 36 floats pass 37, then 36 + 36
  CHECK(DataParallelStep(chain.ps, pc, comm).averager().stats().buckets == 2);
}

TEST_CASE("gradient averager on one process is plain backward") {
  Rng rng(6);
  const Tensor x = random_tensor({4, 1, 1, 6}, rng, 0, 1);
  Chain plain, chain;
  backward(plain.loss(x));
  Communicator one;
  GradientAverager avg(chain.ps, one, true);
  avg.backward(chain.loss(x), 15);
  for (int i = 0; i < 3; ++i) CHECK(same_bits(chain.w[size_t(i)]->grad.data(), plain.w[size_t(i)]->grad.data(), 36));
  CHECK_FALSE(chain.ps.find("unused")->var->grad_valid);
  CHECK(avg.stop_signal() == 15);
  CHECK(avg.stats().steps == 0);
}

TEST_CASE("loader shards are the rows of the whole batch, for any worker count and after seek") {
  Splits s = open_synthetic(64, 8, 3);
  AugmentConfig aug = default_train_augment(*s.train);
  Loader whole(s.train, 8, true, aug, 11, 0);
  Loader first(s.train, 8, true, aug, 11, 2, true, {0, 2}), second(s.train, 8, true, aug, 11, 0, true, {1, 2});
  CHECK(first.batch_shape() == Shape{4, 32, 32, 3});
  CHECK(first.batches_per_epoch() == whole.batches_per_epoch());
  Tensor w, a, b;
  std::vector<int> lw, la, lb;
  for (int i = 0; i < 11; ++i) {  // across an epoch's end
    CAPTURE(i);
    if (!whole.next(w, lw)) {
      REQUIRE_FALSE(first.next(a, la));
      REQUIRE_FALSE(second.next(b, lb));
      continue;
    }
    REQUIRE(first.next(a, la));
    REQUIRE(second.next(b, lb));
    const int64_t half = w.numel() / 2;
    CHECK(same_bits(a.data(), w.data(), half));
    CHECK(same_bits(b.data(), w.data() + half, half));
    CHECK(std::vector<int>(lw.begin(), lw.begin() + 4) == la);
    CHECK(std::vector<int>(lw.begin() + 4, lw.end()) == lb);
  }
  const Loader::Position p = second.position();
  second.next(b, lb);
  const Tensor kept = b.clone();
  second.seek(p);
  second.next(b, lb);
  CHECK(same_bits(b.data(), kept.data(), b.numel()));
  CHECK_THROWS_WITH(Loader(s.train, 9, true, aug, 1, 0, true, {0, 2}), doctest::Contains("does not split into 2 equal shares"));
}

TEST_CASE("the launcher's environment: Open MPI's and PMI's variables") {
  auto with_env = [](std::vector<std::pair<const char*, const char*>> vars) {
    for (auto& [k, v] : vars) setenv(k, v, 1);
    LaunchInfo li = launch_info_from_env();
    for (auto& [k, v] : vars) unsetenv(k);
    return li;
  };
  LaunchInfo none = launch_info_from_env();
  CHECK_FALSE(none.launched);
  CHECK(none.size == 1);
  LaunchInfo ompi = with_env({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  CHECK(ompi.launched);
  CHECK(ompi.size == 4);
  CHECK(ompi.rank == 3);
  CHECK(ompi.local_size == 2);
  LaunchInfo pmi = with_env({{"PMI_SIZE", "2"}, {"PMI_RANK", "1"}});
  CHECK(pmi.launched);
  CHECK(pmi.size == 2);
  CHECK(pmi.rank == 1);
}

TEST_CASE("one process: rank 0 writes, the seed and the batch are its own, records unchanged unless set") {
  REQUIRE(world().size() == 1);
  CHECK(is_writer());
  CHECK(rank_seed(42) == 42);
  CHECK(batch_shard().count == 1);
  CHECK(default_threads_for_rank(world()) == 0);
  const nlohmann::json config = {{"batch", 64}};
  CHECK(with_parallel_record(config, ParallelConfig{}) == config);
  ParallelConfig ghost;
  ghost.bn_groups = 2;
  CHECK(with_parallel_record(config, ghost)["bn_groups"] == 2);
  // A resume notices a setting recorded before and not set now.
  CHECK_THROWS_WITH(compare_run_config(with_parallel_record(config, ghost), config, {}, false, "x.ckpt"),
                    doctest::Contains("bn_groups: was 2, now not set"));
  CHECK_THROWS_WITH(ParallelRun("train", ParallelConfig{false, 3, 300}, 64, true),
                    doctest::Contains("--bn-groups 3 does not split the batch of 64"));
  CHECK_THROWS_WITH(ParallelRun("train", ParallelConfig{true, 2, 300}, 64, true), doctest::Contains("exclude each other"));
  for (double bad : {0.0, -1.0, 5000.0, std::nan("")}) {  // a trial file is not checked by the command line
    ParallelConfig pc;
    pc.bucket_mb = bad;
    CHECK_THROWS_WITH(ParallelRun("train", pc, 64, true), doctest::Contains("--bucket-mb must be in (0, 4096]"));
  }
  {
    ParallelRun run("train", ghost, 64, true);
    CHECK(batchnorm_stats().groups == 2);
  }
  CHECK(batchnorm_stats().groups == 1);
}
