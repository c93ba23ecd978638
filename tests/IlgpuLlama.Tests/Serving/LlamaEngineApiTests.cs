using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Serving;

/// <summary>The facade as .NET developers expect it (issue 23 item 9, in part): LoadAsync with progress and a cancellation token, await using, a chat overload of GenerateTextAsync.</summary>
public sealed class LlamaEngineApiTests(DemoModelDir demo) : IClassFixture<DemoModelDir>
{
    [Fact]
    public async Task LoadAsync_reports_progress_and_the_engine_is_async_disposable()
    {
        var reports = new List<UploadProgress>();
        var progress = new SyncProgress(reports);
        var options = new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 128 } };
        await using (var engine = await LlamaEngine.LoadAsync(demo.Path, options, progress, CancellationToken.None))
        {
            Assert.NotEmpty(reports);
            Assert.Equal(reports[^1].TotalBytes, reports.Max(r => r.DoneBytes));
            var greedy = new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 4, IgnoreEos = true };
            var chat = await engine.GenerateTextAsync([new ChatMessage("user", "Hello")], greedy, CancellationToken.None);
            Assert.Equal(4, chat.GeneratedTokens.Count);
            var streamed = new List<int>();
            await foreach (var token in engine.GenerateAsync([new ChatMessage("user", "Hello")], greedy, CancellationToken.None))
                streamed.Add(token.Id);
            Assert.Equal(chat.GeneratedTokens, streamed);
        }
        // A token cancelled before the load starts: nothing is loaded.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => LlamaEngine.LoadAsync(demo.Path, options, null, cancelled.Token));
    }

    sealed class SyncProgress(List<UploadProgress> reports) : IProgress<UploadProgress>
    {
        public void Report(UploadProgress value)
        {
            lock (reports)
                reports.Add(value);
        }
    }
}
