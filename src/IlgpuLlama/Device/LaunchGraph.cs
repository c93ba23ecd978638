using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime;
using ILGPU;

namespace IlgpuLlama.Device;

/// <summary>
/// A recorded sequence of kernel launches that can be replayed with one call. Arguments (views,
/// shapes) are frozen when recorded, so everything that changes between replays (tokens,
/// positions, slots) must live in device memory.
/// </summary>
public interface ILaunchGraph : IDisposable
{
    /// <summary>Enqueues the whole sequence.</summary>
    void Launch();
}

/// <summary>Creates launch graphs: CUDA graphs on a GPU, recorded closures elsewhere.</summary>
public static class LaunchGraphs
{
    /// <summary>
    /// Records what <paramref name="enqueue"/> launches on <paramref name="stream"/>:
    /// <paramref name="recordLaunches"/> runs it with the launches recorded, not enqueued, and returns
    /// them with their arguments frozen (the kernels' recorder; this layer does not know the kernels).
    /// On CUDA the stream is captured into a CUDA graph (cuStreamBeginCapture / cuGraphInstantiate)
    /// so a replay costs one cuGraphLaunch instead of one host-side launch per kernel.
    /// </summary>
    public static ILaunchGraph Record(AcceleratorStream stream, Func<Action, List<Action>> recordLaunches, Action enqueue)
    {
        if (stream is CudaStream cuda)
            return CudaLaunchGraph.Capture(recordLaunches, cuda, enqueue);
        return new RecordedLaunchGraph(recordLaunches(enqueue));
    }

    sealed class RecordedLaunchGraph(List<Action> launches) : ILaunchGraph
    {
        public void Launch()
        {
            foreach (var l in launches)
                l();
        }

        public void Dispose()
        {
        }
    }
}

/// <summary>A CUDA graph captured from an ILGPU stream through the driver API.</summary>
public sealed class CudaLaunchGraph : ILaunchGraph
{
    readonly CudaStream stream;
    IntPtr graph;
    IntPtr exec;

    CudaLaunchGraph(CudaStream stream, IntPtr graph, IntPtr exec)
    {
        this.stream = stream;
        this.graph = graph;
        this.exec = exec;
    }

    internal static CudaLaunchGraph Capture(Func<Action, List<Action>> recordLaunches, CudaStream stream, Action enqueue)
    {
        if (stream.StreamPtr == IntPtr.Zero)
            throw new InvalidOperationException("CUDA graphs cannot capture the legacy default stream; give the kernels a stream from Accelerator.CreateStream()");
        stream.Accelerator.Bind();
        // Record the launches first (cheap), then replay them inside the capture: a failure in
        // the engine's own code cannot leave the stream stuck in capture mode.
        var launches = recordLaunches(enqueue);
        Check(CuDriver.cuStreamBeginCapture_v2(stream.StreamPtr, CuDriver.CaptureModeRelaxed), "cuStreamBeginCapture");
        IntPtr graph = IntPtr.Zero;
        try
        {
            foreach (var l in launches)
                l();
        }
        finally
        {
            int end = CuDriver.cuStreamEndCapture(stream.StreamPtr, out graph);
            if (end != 0 && graph != IntPtr.Zero)
                CuDriver.cuGraphDestroy(graph);
            Check(end, "cuStreamEndCapture");
        }
        int rc = CuDriver.cuGraphInstantiateWithFlags(out IntPtr exec, graph, 0);
        if (rc != 0)
        {
            CuDriver.cuGraphDestroy(graph);
            Check(rc, "cuGraphInstantiate");
        }
        return new CudaLaunchGraph(stream, graph, exec);
    }

    /// <inheritdoc/>
    public void Launch() => Check(CuDriver.cuGraphLaunch(exec, stream.StreamPtr), "cuGraphLaunch");

    static void Check(int result, string what)
    {
        if (result != 0)
            throw new EngineStateException($"{what} failed with CUDA error {result}; rerun with {EngineParameters.DirectLaunch} to launch kernels one by one", EngineParameter.DirectLaunch);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (exec != IntPtr.Zero)
            CuDriver.cuGraphExecDestroy(exec);
        if (graph != IntPtr.Zero)
            CuDriver.cuGraphDestroy(graph);
        exec = graph = IntPtr.Zero;
    }

    static class CuDriver
    {
        public const int CaptureModeRelaxed = 2;
        const string Lib = "cuda";

        static CuDriver() => NativeLibrary.SetDllImportResolver(typeof(CuDriver).Assembly, Resolve);

        static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
        {
            if (name != Lib)
                return IntPtr.Zero;
            string file = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
            return NativeLibrary.TryLoad(file, assembly, path, out var handle) ? handle : IntPtr.Zero;
        }

        [DllImport(Lib)]
        public static extern int cuStreamBeginCapture_v2(IntPtr stream, int mode);

        [DllImport(Lib)]
        public static extern int cuStreamEndCapture(IntPtr stream, out IntPtr graph);

        [DllImport(Lib)]
        public static extern int cuGraphInstantiateWithFlags(out IntPtr exec, IntPtr graph, ulong flags);

        [DllImport(Lib)]
        public static extern int cuGraphLaunch(IntPtr exec, IntPtr stream);

        [DllImport(Lib)]
        public static extern int cuGraphExecDestroy(IntPtr exec);

        [DllImport(Lib)]
        public static extern int cuGraphDestroy(IntPtr graph);
    }
}
