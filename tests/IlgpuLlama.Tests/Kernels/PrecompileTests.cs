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

    /// <summary>Arguments of a kernel ILGPU cannot compile.</summary>
    public readonly record struct UncompilableArgs(ArrayView<int> Out);

    /// <summary>Boxes a value on the device: ILGPU 1.5.3 fails to compile it (an InternalCompilerException).</summary>
    static void Uncompilable(Index1D i, UncompilableArgs a) => a.Out[i] = ((object)i.X).GetHashCode();

    /// <summary>The compile error is the original one, not a retry's: after a failed compile ILGPU's shared IR context can fail every later compile with a NullReferenceException.</summary>
    [Fact]
    public void A_kernel_that_fails_to_compile_throws_from_Precompile_as_from_a_first_launch()
    {
        using var context = Context.Create(b => b.CPU(ComputeDevice.SingleLaneDevice(2)!).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var acc = context.GetCPUDevice(0).CreateCPUAccelerator(context);
        using var output = acc.Allocate1D<int>(4);
        var bad = KernelDefinition<UncompilableArgs>.Implicit("uncompilable", "test", Uncompilable);
        var k = new LlamaKernels(acc);
        var fromPrecompile = Record.Exception(() => k.Precompile(() => k.Launch(bad, KernelVariant.None, 4, new UncompilableArgs(output.View))));
        // A serial first launch on a fresh context (a failed compile may leave ILGPU's IR context unusable).
        using var context2 = Context.Create(b => b.CPU(ComputeDevice.SingleLaneDevice(2)!).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        using var acc2 = context2.GetCPUDevice(0).CreateCPUAccelerator(context2);
        using var output2 = acc2.Allocate1D<int>(4);
        var other = new LlamaKernels(acc2);
        var fromLaunch = Record.Exception(() => other.Launch(bad, KernelVariant.None, 4, new UncompilableArgs(output2.View)));
        Assert.NotNull(fromLaunch);
        Assert.NotNull(fromPrecompile);
        Assert.Equal(fromLaunch.GetType(), fromPrecompile.GetType());
        Assert.Equal(fromLaunch.Message, fromPrecompile.Message);
        Assert.Equal(0, k.DirectLaunches);
        Assert.IsType<InternalCompilerException>(fromPrecompile);
    }
}
