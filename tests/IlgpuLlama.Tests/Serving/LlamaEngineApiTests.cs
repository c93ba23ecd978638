using IlgpuLlama.Device;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;
using IlgpuLlama.Tests.Cli;
using IlgpuLlama.Text;

namespace IlgpuLlama.Tests.Serving;

/// <summary>The facade as .NET developers expect it (issue 23 item 9): LoadAsync with progress and a cancellation token, await using, a chat overload of GenerateTextAsync, the model and scheduler behind Advanced, a non-null result text, an optional ILogger.</summary>
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

    sealed class ListLogger : Microsoft.Extensions.Logging.ILogger
    {
        public List<(Microsoft.Extensions.Logging.LogLevel Level, string Text)> Lines { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add((logLevel, formatter(state, exception)));
    }

    [Fact]
    public async Task The_facade_shows_generation_and_keeps_the_parts_behind_Advanced()
    {
        var logger = new ListLogger();
        using var engine = LlamaEngine.Load(demo.Path, new LlamaEngineOptions { Device = DeviceKind.Cpu, Engine = new EngineOptions { MaxBatchSize = 1, MaxSeqLen = 64 }, Logger = logger });
        // No public member of the facade is the model or the scheduler; Advanced has both.
        var exposed = typeof(LlamaEngine).GetProperties().Select(p => p.PropertyType).ToList();
        Assert.DoesNotContain(typeof(LlamaModel), exposed);
        Assert.DoesNotContain(typeof(IlgpuLlama.Engine.Serving.Scheduler), exposed);
        Assert.Equal(64, engine.Advanced.Model.MaxSeq);
        Assert.Equal(0, engine.Advanced.Scheduler.RunningCount);
        Assert.Equal((1, 64), (engine.MaxBatchSize, engine.MaxSeqLen));
        Assert.False(string.IsNullOrEmpty(engine.DeviceDescription));
        // The load's summary went to the logger.
        Assert.Contains(logger.Lines, l => l.Level == Microsoft.Extensions.Logging.LogLevel.Information && l.Text.StartsWith("loaded ", StringComparison.Ordinal) && l.Text.Contains("KV slots"));

        // Without a tokenizer the result's text is empty, not null; the tokens are there.
        using var idsOnly = LlamaEngine.FromModel(engine.Advanced.Model, tokenizer: null);
        var result = await idsOnly.Submit([1, 2, 3], new GenerationSettings { Sampling = SamplingOptions.Greedy, MaxNewTokens = 2, IgnoreEos = true }).Completion;
        Assert.Equal("", result.Text);
        Assert.Equal(2, result.GeneratedTokens.Count);
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
