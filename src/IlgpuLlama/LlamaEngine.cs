using System.Runtime.CompilerServices;
using IlgpuLlama.Device;
using IlgpuLlama.Engine.Serving;
using IlgpuLlama.Engine;
using IlgpuLlama.Gguf;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;
using Microsoft.Extensions.Logging;

namespace IlgpuLlama;

/// <summary>How <see cref="LlamaEngine.Load(string, LlamaEngineOptions?)"/> sets up the engine.</summary>
public sealed record LlamaEngineOptions
{
    /// <summary>Which accelerator (CUDA if present by default).</summary>
    public DeviceKind Device { get; init; } = DeviceKind.Auto;

    /// <summary>Engine limits: KV-cache slots, context length, weight format.</summary>
    public EngineOptions Engine { get; init; } = new();

    /// <summary>Queue length and prefill chunk of the scheduler.</summary>
    public SchedulerOptions Scheduler { get; init; } = new();

    /// <summary>
    /// Receives the load's summary (Information) and its warnings, such as weights that became fp16
    /// subnormals (Warning). Null: silent (the warnings stay in <c>Advanced.Model.Warnings</c>).
    /// </summary>
    public ILogger? Logger { get; init; }
}

/// <summary>
/// The engine's parts under the facade, for programs that need more than generation (the server's
/// health and metrics, benchmarks, the CLI's reports): the model on its device and the scheduler.
/// </summary>
public sealed class LlamaEngineAdvanced
{
    internal LlamaEngineAdvanced(LlamaModel model, Scheduler scheduler)
    {
        Model = model;
        Scheduler = scheduler;
    }

    /// <summary>The model on its device (its config, allocator, KV cache, forward pass).</summary>
    public LlamaModel Model { get; }

    /// <summary>The continuous-batching scheduler every generation goes through (queue, slots, statistics).</summary>
    public Scheduler Scheduler { get; }
}

/// <summary>
/// The library's front door: a model, its tokenizer and a continuous-batching scheduler running
/// on a background thread. Many generations may run at once from any thread; each streams its
/// tokens as an <see cref="IAsyncEnumerable{T}"/> with text already decoded (UTF-8 held back until
/// a character completes, special tokens hidden, stop strings cut), and cancelling its token ends
/// it and frees its KV slot.
/// <code>
/// using var engine = LlamaEngine.Load("weights/Llama-3.2-1B-Instruct");
/// await foreach (var token in engine.GenerateAsync([new ChatMessage("user", "Hi!")]))
///     Console.Write(token.Text);
/// </code>
/// </summary>
public sealed class LlamaEngine : IDisposable, IAsyncDisposable
{
    readonly ComputeDevice? ownedDevice;
    readonly bool ownsModel;

    LlamaEngine(LlamaModel model, LlamaTokenizer? tokenizer, SchedulerOptions? scheduler, bool ownsModel, ComputeDevice? ownedDevice)
    {
        Model = model;
        Tokenizer = tokenizer;
        this.ownsModel = ownsModel;
        this.ownedDevice = ownedDevice;
        Scheduler = new Scheduler(model, tokenizer, scheduler);
        Advanced = new LlamaEngineAdvanced(model, Scheduler);
        Scheduler.Start();
    }

    /// <summary>Loads a Hugging Face Llama 3 model directory (config.json, safetensors, tokenizer), a GGUF file or ollama:NAME[:TAG] onto a device.</summary>
    public static LlamaEngine Load(string modelDir, LlamaEngineOptions? options = null) => Load(modelDir, options, null);

    /// <summary>
    /// <see cref="Load(string, LlamaEngineOptions?)"/> on a worker thread, reporting the weight upload to
    /// <paramref name="progress"/>. <paramref name="cancellationToken"/> is observed before the load starts and
    /// after it ends (an engine loaded after cancellation is disposed); compiling kernels and uploading
    /// weights run to their end once started.
    /// </summary>
    public static Task<LlamaEngine> LoadAsync(string modelPath, LlamaEngineOptions? options = null, IProgress<UploadProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() =>
        {
            cancellationToken.ThrowIfCancellationRequested();
            var engine = Load(modelPath, options, progress);
            if (cancellationToken.IsCancellationRequested)
            {
                engine.Dispose();
                cancellationToken.ThrowIfCancellationRequested();
            }
            return engine;
        }, cancellationToken);

    static LlamaEngine Load(string modelDir, LlamaEngineOptions? options, IProgress<UploadProgress>? progress)
    {
        options ??= new LlamaEngineOptions();
        bool gguf = GgufLocation.IsGguf(modelDir);
        if (!gguf && !Directory.Exists(modelDir))
            throw new EngineArgumentException($"{EngineParameters.Model} '{modelDir}' does not exist; give a Hugging Face Llama 3 model directory, a .gguf file or ollama:NAME (see weights/README.md)", EngineParameter.Model);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var tokenizer = LlamaTokenizer.FromModel(modelDir);
        var device = ComputeDevice.Create(options.Device);
        try
        {
            var model = LlamaModel.Load(device, modelDir, options.Engine, progress);
            if (options.Logger is { } log)
            {
                log.LogInformation("loaded {Model} ({Parameters:N0} parameters, {Format}) on {Device} in {Seconds:F1} s: {Slots} KV slots x {Positions} positions",
                    modelDir, model.Config.ParameterCount(), model.Layout.Describe(model.Config), device.Description, clock.Elapsed.TotalSeconds, model.MaxBatch, model.MaxSeq);
                foreach (var warning in model.Warnings)
                    log.LogWarning("{Warning}", warning.ToString());
            }
            return new LlamaEngine(model, tokenizer, options.Scheduler, ownsModel: true, device);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>
    /// An engine over a model already loaded (the caller keeps ownership of it and its device);
    /// without a tokenizer only token-id prompts and stop token ids work.
    /// </summary>
    public static LlamaEngine FromModel(LlamaModel model, LlamaTokenizer? tokenizer, SchedulerOptions? scheduler = null) =>
        new(model, tokenizer, scheduler, ownsModel: false, null);

    /// <summary>The model and the scheduler under the facade, for programs that need them (see <see cref="LlamaEngineAdvanced"/>).</summary>
    public LlamaEngineAdvanced Advanced { get; }

    LlamaModel Model { get; }

    Scheduler Scheduler { get; }

    /// <summary>Generations that can run at once (KV-cache slots).</summary>
    public int MaxBatchSize => Model.MaxBatch;

    /// <summary>The context length: prompt and generated tokens of one generation together.</summary>
    public int MaxSeqLen => Model.MaxSeq;

    /// <summary>The device the model runs on, in words.</summary>
    public string DeviceDescription => Model.Device.Description;

    /// <summary>The model's tokenizer (null when the engine was made from token ids only).</summary>
    public LlamaTokenizer? Tokenizer { get; }


    /// <summary>The tokens that end a generation unless <see cref="GenerationSettings.IgnoreEos"/>: the model's end-of-sequence ids and the tokenizer's end-of-turn ids.</summary>
    public IReadOnlyCollection<int> EndOfSequenceTokens => Scheduler.EndOfSequenceTokens;

    /// <summary>Token ids of a text prompt, beginning with BOS.</summary>
    public IReadOnlyList<int> Encode(string prompt) => RequireTokenizer().Encode(prompt, addBos: true);

    /// <summary>
    /// Token ids of a conversation in the Llama 3 chat format, ending with the assistant header; with
    /// <paramref name="tools"/>, their definitions go into the first user message as Meta's template
    /// writes them (see <see cref="ChatTemplate"/>).
    /// </summary>
    public IReadOnlyList<int> EncodeChat(IReadOnlyList<ChatMessage> messages, DateOnly? date = null, IReadOnlyList<ChatTool>? tools = null) =>
        ChatTemplate.Encode(RequireTokenizer(), messages, addGenerationPrompt: true, date, tools);

    LlamaTokenizer RequireTokenizer() => Tokenizer
        ?? throw new EngineArgumentException("this engine has no tokenizer, so it takes token ids only; load the model directory with its tokenizer files", EngineParameter.Tokens);

    /// <summary>The scheduler request for a prompt and settings (the scheduler adds the end-of-sequence tokens to the stop set unless the settings ignore them).</summary>
    public GenerationRequest Request(IReadOnlyList<int> promptTokens, GenerationSettings? settings = null) =>
        new() { PromptTokens = promptTokens, Settings = settings ?? new GenerationSettings() };

    /// <summary>Queues a generation and returns its handle (tokens as they come, the result at the end).</summary>
    public ScheduledRequest Submit(IReadOnlyList<int> promptTokens, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        Scheduler.Submit(Request(promptTokens, settings), cancellationToken);

    /// <summary>
    /// Queues <paramref name="n"/> choices of one prompt that share its prefill (OpenAI's <c>n</c>):
    /// choice i draws from random stream <see cref="GenerationSettings.SamplingStream"/> + i of one seed
    /// and carries <see cref="ScheduledRequest.Choice"/> i. See <see cref="Scheduler.SubmitGroup"/>.
    /// </summary>
    public IReadOnlyList<ScheduledRequest> SubmitChoices(IReadOnlyList<int> promptTokens, int n, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        Scheduler.SubmitGroup(Request(promptTokens, settings), n, cancellationToken);

    /// <summary>Continues a text prompt (BOS is added), streaming each token with its text.</summary>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(string prompt, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(Encode(prompt), settings, cancellationToken);

    /// <summary>Answers a conversation as the assistant (Llama 3 chat format), streaming each token with its text.</summary>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(IReadOnlyList<ChatMessage> messages, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(EncodeChat(messages), settings, cancellationToken);

    /// <summary>Continues a prompt of token ids, streaming each token (with its text when there is a tokenizer).</summary>
    public IAsyncEnumerable<GeneratedToken> GenerateAsync(IReadOnlyList<int> promptTokens, GenerationSettings? settings = null, CancellationToken cancellationToken = default)
    {
        // Submitted now, so a bad request throws here rather than at the first MoveNextAsync.
        var handle = Submit(promptTokens, settings, cancellationToken);
        return Stream(handle, cancellationToken);
    }

    static async IAsyncEnumerable<GeneratedToken> Stream(ScheduledRequest handle, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        try
        {
            // ReadAllAsync checks the token only while waiting: tokens already buffered when the
            // consumer cancels would still come out, so each one checks it too.
            await foreach (var token in handle.Tokens.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return token;
            }
        }
        finally
        {
            // A consumer that stops early (break, an exception) gives the slot back.
            if (handle.State != RequestState.Finished)
                handle.Cancel();
        }
    }

    /// <summary>Generates to the end and returns the whole result (text, tokens, finish reason, timings).</summary>
    public Task<RequestResult> GenerateTextAsync(string prompt, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        Submit(Encode(prompt), settings, cancellationToken).Completion;

    /// <summary>Answers a conversation as the assistant (Llama 3 chat format) to the end and returns the whole result.</summary>
    public Task<RequestResult> GenerateTextAsync(IReadOnlyList<ChatMessage> messages, GenerationSettings? settings = null, CancellationToken cancellationToken = default) =>
        Submit(EncodeChat(messages), settings, cancellationToken).Completion;

    /// <summary>As <see cref="Dispose"/>, for <c>await using</c>: the scheduler's thread is stopped and joined, the device memory freed.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Stops the scheduler (cancelling what is still running), then frees the model if the engine loaded it.</summary>
    public void Dispose()
    {
        Scheduler.Dispose();
        if (ownsModel)
            Model.Dispose();
        ownedDevice?.Dispose();
    }
}
