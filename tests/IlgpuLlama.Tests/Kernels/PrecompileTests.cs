using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using IlgpuLlama.Device;
using IlgpuLlama.Kernels;

namespace IlgpuLlama.Tests.Kernels;

/// <summary>
/// LlamaKernels.Precompile (issue 23 item 1: the load compiles its kernel specialisations
/// concurrently): it compiles and loads what a pass launches without enqueueing anything, compiles
/// each specialisation once per accelerator, and the launches afterwards compute what a serial first
/// use computes. Its own context, so the per-accelerator cache starts empty.
/// </summary>
public sealed class PrecompileTests
{
    [Fact]
    public void Precompile_loads_every_launched_specialisation_once_and_enqueues_nothing()
    {
        using var context = Context.Create(b => b.CPU(ComputeDevice.SingleLaneDevice(2)!).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var acc = context.GetCPUDevice(0).CreateCPUAccelerator(context);
        const int rows = 3, vocab = 97;
        var rng = new Random(5);
        var logits = TestData.Floats(rng, rows * vocab, 4);
        var expected = Enumerable.Range(0, rows).Select(r => Array.IndexOf(logits, logits.Skip(r * vocab).Take(vocab).Max(), r * vocab) - r * vocab).ToArray();

        var k = new LlamaKernels(acc);
        int parts = LogitsKernels.ReduceParts(vocab, k.Tuning);
        using var lb = acc.Allocate1D(logits);
        using var pm = acc.Allocate1D<float>(rows * parts);
        using var ps = acc.Allocate1D<float>(rows * parts);
        using var pi = acc.Allocate1D<int>(rows * parts);
        using var cnt = acc.Allocate1D<int>(rows);
        using var tok = acc.Allocate1D(new[] { -7, -7, -7 });
        using var max = acc.Allocate1D<float>(rows);
        using var sum = acc.Allocate1D<float>(rows);
        using var invT = acc.Allocate1D(Enumerable.Repeat(1f, rows).ToArray());
        cnt.MemSetToZero();
        void Pass(LlamaKernels kernels) =>
            kernels.LogitsReduce(lb.View, new LogitsReduceBuffers(pm.View, ps.View, pi.View, cnt.View, tok.View, max.View, sum.View), invT.View, rows, vocab);

        int compiled = k.Precompile(() => Pass(k));
        Assert.InRange(compiled, 1, 10);
        Assert.Equal(compiled, k.LoadedCount);
        Assert.Equal(0, k.DirectLaunches);
        acc.Synchronize();
        Assert.Equal([-7, -7, -7], tok.GetAsArray1D());
        Assert.Equal(0, k.Precompile(() => Pass(k)));

        // A second instance on the same accelerator reuses the loaded launchers.
        var other = new LlamaKernels(acc);
        Assert.Equal(0, other.Precompile(() => Pass(other)));
        Assert.Equal(compiled, other.LoadedCount);

        Pass(k);
        acc.Synchronize();
        Assert.Equal(compiled, k.LoadedCount);
        Assert.Equal(expected, tok.GetAsArray1D());
    }
}
