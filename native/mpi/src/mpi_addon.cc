// Node-API binding of the few MPI collectives data-parallel training needs (MPI_COMM_WORLD
// only). Collectives that move gradients run as AsyncWorkers so the event loop stays free
// (a SIGTERM from mpirun after another rank failed can still be reported); the trainer
// never has two in flight, so MPI_THREAD_SERIALIZED is enough.
#include <napi.h>
#include <mpi.h>
#include <dlfcn.h>
#include <unistd.h>
#include <string>
#include <vector>

namespace {

bool g_inited = false;

void Check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) + ": " + std::string(msg, len));
}

// Open MPI loads its transports as plugins that look up libmpi's symbols globally; Node loads
// addons with RTLD_LOCAL, so promote libmpi to the global namespace before MPI_Init.
void PromoteLibmpi() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) && info.dli_fname) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g_inited) {
    PromoteLibmpi();
    int provided = 0;
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) { Napi::Error::New(env, "MPI_Init_thread failed").ThrowAsJavaScriptException(); return env.Null(); }
    if (provided < MPI_THREAD_SERIALIZED) {
      Napi::Error::New(env, "MPI library does not provide MPI_THREAD_SERIALIZED").ThrowAsJavaScriptException();
      return env.Null();
    }
    // Errors come back as codes (thrown as JS errors) instead of aborting inside MPI.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    g_inited = true;
  }
  int rank = 0, size = 1, len = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char ver[MPI_MAX_LIBRARY_VERSION_STRING];
  MPI_Get_library_version(ver, &len);
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", rank);
  o.Set("size", size);
  o.Set("library", std::string(ver, len));
  return o;
}

MPI_Datatype TypeOf(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return MPI_FLOAT;
    case napi_float64_array: return MPI_DOUBLE;
    case napi_int32_array: return MPI_INT;
    case napi_uint8_array: return MPI_BYTE;
    default: return MPI_DATATYPE_NULL;
  }
}

struct View { void* data; size_t count; MPI_Datatype type; };

View ViewOf(const Napi::Value& v) {
  if (!v.IsTypedArray()) throw Napi::TypeError::New(v.Env(), "expected a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  MPI_Datatype t = TypeOf(ta.TypedArrayType());
  if (t == MPI_DATATYPE_NULL) throw Napi::TypeError::New(v.Env(), "typed array must be Float32/Float64/Int32/Uint8");
  uint8_t* base = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return {base, ta.ElementLength(), t};
}

// In-place sum over all ranks, off the main thread.
class AllReduceWorker : public Napi::AsyncWorker {
 public:
  AllReduceWorker(Napi::Env env, Napi::Value arr, View v)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), ref_(Napi::Persistent(arr.As<Napi::Object>())), v_(v) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int rc = MPI_Allreduce(MPI_IN_PLACE, v_.data, static_cast<int>(v_.count), v_.type, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      char msg[MPI_MAX_ERROR_STRING]; int len = 0;
      MPI_Error_string(rc, msg, &len);
      SetError(std::string("MPI_Allreduce: ") + std::string(msg, len));
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference ref_;
  View v_;
};

Napi::Value AllReduceSum(const Napi::CallbackInfo& info) {
  View v = ViewOf(info[0]);
  if (v.count > static_cast<size_t>(INT32_MAX)) throw Napi::RangeError::New(info.Env(), "allReduceSum: buffer too large for one MPI call");
  auto* w = new AllReduceWorker(info.Env(), info[0], v);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class BcastWorker : public Napi::AsyncWorker {
 public:
  BcastWorker(Napi::Env env, Napi::Value arr, View v, int root)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), ref_(Napi::Persistent(arr.As<Napi::Object>())), v_(v), root_(root) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    int rc = MPI_Bcast(v_.data, static_cast<int>(v_.count), v_.type, root_, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) SetError("MPI_Bcast failed");
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference ref_;
  View v_;
  int root_;
};

Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  View v = ViewOf(info[0]);
  int root = info[1].As<Napi::Number>().Int32Value();
  auto* w = new BcastWorker(info.Env(), info[0], v, root);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class BarrierWorker : public Napi::AsyncWorker {
 public:
  explicit BarrierWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  // Non-blocking barrier polled with short sleeps: ranks waiting for rank 0 (evaluating or
  // writing a checkpoint) leave the cores to it instead of spinning inside MPI.
  void Execute() override {
    MPI_Request req;
    if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS) { SetError("MPI_Ibarrier failed"); return; }
    for (;;) {
      int done = 0;
      if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) { SetError("MPI_Test failed"); return; }
      if (done) return;
      usleep(200);
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
 private:
  Napi::Promise::Deferred deferred_;
};

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  auto* w = new BarrierWorker(info.Env());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Ends every rank of the job (mpirun kills the others); used when one rank fails.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 1;
  MPI_Abort(MPI_COMM_WORLD, code);
  return info.Env().Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int fin = 0;
  MPI_Finalized(&fin);
  if (g_inited && !fin) MPI_Finalize();
  return info.Env().Undefined();
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("allReduceSum", Napi::Function::New(env, AllReduceSum));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  return exports;
}

}  // namespace

NODE_API_MODULE(peft_mpi, Module)
