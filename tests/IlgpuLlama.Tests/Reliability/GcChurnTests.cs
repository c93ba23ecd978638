using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Kernels;
using IlgpuLlama.Tests.Model;
using Xunit.Abstractions;

namespace IlgpuLlama.Tests.Reliability;

/// <summary>
/// A thread that allocates and forces compacting collections until disposed, so that any managed
/// array handed to native code without pinning moves under it (issue 17, defect 1).
/// </summary>
public sealed class AllocationChurn : IDisposable
{
    readonly Thread thread;
    volatile bool stop;

    readonly int collectEvery;

    /// <param name="collectEvery">allocations between two forced collections (every 8th of them a full one)</param>
    public AllocationChurn(int collectEvery = 2048)
    {
        this.collectEvery = collectEvery;
        thread = new Thread(Run) { IsBackground = true, Name = "allocation churn" };
        thread.Start();
    }

    /// <summary>Forced compacting collections so far.</summary>
    public long Collections { get; private set; }

    void Run()
    {
        var random = new Random(17);
        var live = new object[97];
        for (long i = 0; !stop; i++)
        {
            // A ring of live arrays of mixed sizes keeps the heap fragmented, so compaction moves things.
            live[i % live.Length] = new byte[random.Next(16, 48 * 1024)];
            if (i % collectEvery == 0)
            {
                GC.Collect(i % (8L * collectEvery) == 0 ? 2 : 0, GCCollectionMode.Forced, blocking: true, compacting: true);
                Collections++;
            }
        }
    }

    public void Dispose()
    {
        stop = true;
        thread.Join();
    }
}

/// <summary>
/// Host-device copies under a garbage collector that moves memory: every copy goes through
/// <see cref="HostCopy"/>, which pins the host memory for the whole copy (the architecture test
/// forbids ILGPU's unpinned <c>ref T</c> overloads). Before the fix, the engine's call shape gave
/// wrong uploads and downloads, a segmentation fault, and decode steps whose logits changed when a
/// thread allocated beside them.
/// </summary>
[Collection(GoldenCollection.Name)]
public sealed class GcChurnTests(GoldenModelContext ctx, ITestOutputHelper output)
{
    [Fact]
    public void Round_trips_under_compacting_collections_return_every_byte()
    {
        var accelerator = ctx.Device.Accelerator;
        const int length = 1021;
        using var buffer = accelerator.Allocate1D<int>(length);
        long copies = 0, wrong = 0;
        var clock = Stopwatch.StartNew();
        using (var churn = new AllocationChurn())
        {
            for (int i = 0; clock.Elapsed < TimeSpan.FromSeconds(3) || churn.Collections < 20; i++)
            {
                // Fresh arrays each round, as Upload/Download get them: young objects that a gen-0 collection moves.
                var up = new int[length];
                for (int k = 0; k < length; k++)
                    up[k] = i * 7919 + k;
                HostCopy.Upload(buffer.View, up);
                var down = new int[length];
                HostCopy.Download(buffer.View, down);
                copies += 2;
                for (int k = 0; k < length; k++)
                {
                    if (down[k] != i * 7919 + k)
                    {
                        wrong++;
                        break;
                    }
                }
            }
            output.WriteLine($"{copies:N0} copies beside {churn.Collections:N0} forced compacting collections, {wrong} wrong");
        }
        Assert.Equal(0, wrong);
    }

    [Fact]
    public void Decode_beside_an_allocating_thread_gives_the_same_logits_bit_for_bit()
    {
        var model = ctx.Model;
        var tokens = GoldenFixture.Cases[0].AllTokens[..8];
        var quiet = GoldenModelTests.DecodeLogits(model, tokens, slot: 2);
        float[][] churned;
        long collections;
        // Fewer forced collections than the round-trip test: each one suspends the CPU accelerator's many threads.
        using (var churn = new AllocationChurn(collectEvery: 8192))
        {
            churned = GoldenModelTests.DecodeLogits(model, tokens, slot: 2);
            collections = churn.Collections;
        }
        output.WriteLine($"{tokens.Length} decode steps beside {collections:N0} forced compacting collections");
        for (int t = 0; t < tokens.Length; t++)
        {
            int differing = 0;
            for (int v = 0; v < quiet[t].Length; v++)
            {
                if (BitConverter.SingleToInt32Bits(quiet[t][v]) != BitConverter.SingleToInt32Bits(churned[t][v]))
                    differing++;
            }
            Assert.True(differing == 0, $"decode step {t}: {differing} of {quiet[t].Length} logits differ from the run without an allocating thread");
        }
    }
}
