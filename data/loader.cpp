// The Loader: a ring of batch slots filled in order by background std::threads.
//
// Batches are numbered globally, seq = epoch * batches_per_epoch + batch. A worker takes the next
// unissued seq while a slot is free, assembles the whole batch (sample k of batch b in epoch e is
// dataset index perm_e[b*B + k], transformed with Rng(mix_seed(seed, e, index))), and publishes it;
// next() waits for its seq, copies it out and frees the slot. Content therefore depends only on
// (seed, epoch, batch), never on which worker or how many workers did the work.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "data/data.h"
#include "engine/threads.h"

namespace spnas {

static AugmentConfig with_norm(AugmentConfig a, const Dataset& ds) {
  if (a.mean.empty() && a.std.empty()) {
    a.mean = ds.mean();
    a.std = ds.stddev();
    if (int(a.mean.size()) != ds.channels() || int(a.std.size()) != ds.channels()) {  // no published figures
      a.mean.assign(size_t(ds.channels()), 0.5f);
      a.std.assign(size_t(ds.channels()), 0.25f);
    }
  }
  return a;
}

static int64_t compute_bpe(const Dataset& ds, int batch, bool drop_last) {
  check(batch > 0, "Loader", "batch size must be positive, got " + std::to_string(batch));
  const int64_t n = ds.size();
  const int64_t bpe = drop_last ? n / batch : (n + batch - 1) / batch;
  check(bpe > 0, "Loader",
        ds.name() + " has " + std::to_string(n) + " images, fewer than one batch of " + std::to_string(batch) +
            (drop_last ? " (drop_last)" : ""));
  return bpe;
}

Loader::Loader(std::shared_ptr<Dataset> ds, int batch_size, bool shuffle, AugmentConfig aug, uint64_t seed, int workers,
               bool drop_last, BatchShard shard)
    : ds_(std::move(ds)),
      batch_size_(batch_size),
      shuffle_(shuffle),
      seed_(seed),
      workers_(workers),
      drop_last_(drop_last),
      shard_(shard),
      batches_per_epoch_((check(ds_ != nullptr, "Loader", "no dataset"), compute_bpe(*ds_, batch_size, drop_last))),
      transform_(with_norm(aug, *ds_), ds_->height(), ds_->width(), ds_->channels()) {
  check(workers >= 0 && workers <= 256, "Loader", "worker count must be in 0..256, got " + std::to_string(workers));
  check(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count, "Loader",
        "shard " + std::to_string(shard.index) + " of " + std::to_string(shard.count) + " does not exist");
  // A partial last batch would not split into equal shares.
  check(shard.count == 1 || (drop_last && batch_size % shard.count == 0), "Loader",
        "a batch of " + std::to_string(batch_size) + " does not split into " + std::to_string(shard.count) + " equal shares");
  if (workers_ > 0) {
    slots_.resize(size_t(std::max(2, 2 * workers_)));
    for (auto& s : slots_) s.images = Tensor::empty(batch_shape());
    start_workers();
  }
}

Loader::~Loader() { stop_workers(); }

Shape Loader::batch_shape() const {
  return {batch_size_ / shard_.count, transform_.out_h(), transform_.out_w(), transform_.channels()};
}

Loader::Position Loader::position() const { return {epoch_, batch_}; }

std::shared_ptr<const std::vector<int64_t>> Loader::perm_for(int64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = perms_.find(epoch);
    if (it != perms_.end()) return it->second;
  }
  auto p = std::make_shared<const std::vector<int64_t>>(epoch_permutation(ds_->size(), seed_, epoch));
  std::lock_guard<std::mutex> lock(mu_);
  // Forget epochs the consumer has passed (they are recomputed if a seek goes back).
  const int64_t current = consume_seq_ / batches_per_epoch_;
  for (auto it = perms_.begin(); it != perms_.end();) it = it->first < current ? perms_.erase(it) : std::next(it);
  return perms_.emplace(epoch, p).first->second;
}

void Loader::fill(Slot& s, int64_t seq, std::vector<uint8_t>& scratch) {
  const int64_t epoch = seq / batches_per_epoch_, b = seq % batches_per_epoch_;
  const int64_t share = batch_size_ / shard_.count;
  const int64_t n = ds_->size(), start = b * batch_size_ + shard_.index * share;
  const int64_t count = std::min<int64_t>(share, n - start);
  std::shared_ptr<const std::vector<int64_t>> perm;
  if (shuffle_) perm = perm_for(epoch);
  const int64_t per = int64_t(transform_.out_h()) * transform_.out_w() * transform_.channels();
  scratch.resize(size_t(ds_->image_bytes()));
  s.labels.resize(size_t(count));
  float* dst = s.images.data();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t idx = perm ? (*perm)[size_t(start + k)] : start + k;
    ds_->image(idx, scratch.data());
    Rng rng(mix_seed(seed_, uint64_t(epoch), uint64_t(idx)));
    transform_.apply(scratch.data(), dst + k * per, rng);
    s.labels[size_t(k)] = ds_->label(idx);
  }
  s.count = count;
}

void Loader::worker_loop() {
  std::vector<uint8_t> scratch;
  const int64_t depth = int64_t(slots_.size());
  for (;;) {
    int64_t seq;
    Slot* slot;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_worker_.wait(lock, [&] { return stopping_ || issue_seq_ < consume_seq_ + depth; });
      if (stopping_) return;
      seq = issue_seq_++;
      slot = &slots_[size_t(seq % depth)];
    }
    std::exception_ptr err;
    try {
      fill(*slot, seq, scratch);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot->error = err;
      slot->seq = seq;
    }
    cv_consumer_.notify_all();
  }
}

void Loader::start_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = false;
    issue_seq_ = consume_seq_;
    for (auto& s : slots_) {
      s.seq = -1;
      s.error = nullptr;
    }
  }
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_worker_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

static void copy_out(const Tensor& src, int64_t count, const Shape& full, Tensor& images) {
  Shape shape = full;
  shape[0] = count;
  if (!images.defined() || images.shape() != shape) images = Tensor::empty(shape);
  std::memcpy(images.data(), src.data(), size_t(images.numel()) * sizeof(float));
}

bool Loader::next(Tensor& images, std::vector<int>& labels) {
  if (batch_ == batches_per_epoch_) {
    ++epoch_;
    batch_ = 0;
    return false;
  }
  const int64_t seq = epoch_ * batches_per_epoch_ + batch_;
  if (workers_ == 0) {
    Slot s;
    const Shape full = batch_shape();
    if (images.defined() && images.shape() == full) s.images = images;  // fill the caller's tensor in place
    else s.images = Tensor::empty(full);
    consume_seq_ = seq;
    fill(s, seq, sync_scratch_);
    if (s.count == full[0]) images = s.images;
    else copy_out(s.images, s.count, full, images);
    labels = s.labels;
    ++batch_;
    consume_seq_ = seq + 1;
    return true;
  }
  Slot& slot = slots_[size_t(seq % int64_t(slots_.size()))];
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_consumer_.wait(lock, [&] { return slot.seq == seq; });
    if (slot.error) std::rethrow_exception(slot.error);  // stays failed until seek()
  }
  copy_out(slot.images, slot.count, batch_shape(), images);
  labels.assign(slot.labels.begin(), slot.labels.end());
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot.seq = -1;
    consume_seq_ = seq + 1;
  }
  cv_worker_.notify_all();
  ++batch_;
  return true;
}

void Loader::seek(Position p) {
  check(p.epoch >= 0 && p.batch >= 0 && p.batch <= batches_per_epoch_, "Loader::seek",
        "position (epoch " + std::to_string(p.epoch) + ", batch " + std::to_string(p.batch) + ") outside 0.." +
            std::to_string(batches_per_epoch_) + " batches per epoch");
  stop_workers();
  epoch_ = p.epoch;
  batch_ = p.batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    consume_seq_ = epoch_ * batches_per_epoch_ + batch_;
  }
  if (workers_ > 0) start_workers();
}

DataCheck check_data(const Splits& splits) {
  const auto t0 = std::chrono::steady_clock::now();
  DataCheck r;
  std::mutex mu;
  std::vector<std::string> bad;
  for (const std::shared_ptr<Dataset>& d : {splits.train, splits.val, splits.test}) {
    if (!d) continue;
    parallel_for(d->size(), [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> px(size_t(d->image_bytes()));
      for (int64_t i = begin; i < end; ++i) {
        try {
          d->image(i, px.data());
          d->label(i);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(mu);
          bad.push_back(e.what());
        }
      }
    }, 16);
    r.images += d->size();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!bad.empty()) {
    std::sort(bad.begin(), bad.end());
    std::string m = "data check: " + std::to_string(bad.size()) + " of " + std::to_string(r.images) +
                    " images cannot be read:";
    for (size_t i = 0; i < bad.size() && i < 20; ++i) m += "\n  " + bad[i];
    if (bad.size() > 20) m += "\n  ... and " + std::to_string(bad.size() - 20) + " more";
    throw std::runtime_error(m);
  }
  return r;
}

}  // namespace spnas
