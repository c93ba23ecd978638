// Using IlgpuLlama as a library: load a model, stream a completion, answer a chat, run several
// prompts at once. Usage: dotnet run --project examples/IlgpuLlama.Example -c Release [-- MODEL_DIR]
// Without a directory it runs the built-in demo model (random weights: its text is gibberish).
using IlgpuLlama;
using IlgpuLlama.Engine;
using IlgpuLlama.Sampling;
using IlgpuLlama.Text;

string dir = args.Length > 0 ? args[0] : DemoModel.Ensure("weights");
using var engine = LlamaEngine.Load(dir);
Console.Error.WriteLine($"loaded {dir} on {engine.DeviceDescription}");

// Ctrl-C stops the current generation and frees its KV slot.
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };

// 1. A completion, streamed token by token (the defaults are the CLI's: 64 tokens, temperature 0.6).
Console.Write("The capital of France is");
await foreach (var token in engine.GenerateAsync("The capital of France is", new GenerationSettings { MaxNewTokens = 24 }, cancel.Token))
    Console.Write(token.Text);
Console.WriteLine();

// 2. A chat turn in the Llama 3 template, greedy, stopping at a blank line.
ChatMessage[] chat = [new("system", "You are a concise assistant."), new("user", "Name three colours.")];
var settings = new GenerationSettings { Sampling = SamplingOptions.Greedy, StopStrings = ["\n\n"], MaxNewTokens = 48 };
await foreach (var token in engine.GenerateAsync(chat, settings, cancel.Token))
{
    Console.Write(token.Text);
    if (token.FinishReason is { } reason)
        Console.WriteLine($"\n[{reason}, {token.Index + 1} tokens]");
}

// 3. Several prompts at once: they share the batch (continuous batching), each result is its own.
string[] prompts = ["Once upon a time", "In 1969", "Hello world", "The numbers 1 2 3", "GPUs are"];
var results = await Task.WhenAll(prompts.Select(p => engine.GenerateTextAsync(p, settings with { MaxNewTokens = 16 }, cancel.Token)));
for (int i = 0; i < prompts.Length; i++)
    Console.WriteLine($"{prompts[i]} -> {results[i].Text!.ReplaceLineEndings(" ")} ({results[i].GeneratedTokens.Count} tokens, {results[i].FinishReason})");
