// IlgpuLlama through Microsoft.Extensions.AI: one line gives an IChatClient, and everything after it
// is the IChatClient API only (what Semantic Kernel and other IChatClient consumers call).
// Usage: dotnet run --project examples/IlgpuLlama.ChatClientExample -c Release [-- MODEL_DIR]
// Without a directory it runs the built-in demo model (random weights: its text is gibberish).
using IlgpuLlama.Engine;
using IlgpuLlama.Extensions.AI;
using Microsoft.Extensions.AI;

string dir = args.Length > 0 ? args[0] : DemoModel.Ensure("weights");

using IChatClient client = LlamaChatClient.Load(dir);

var metadata = client.GetService<ChatClientMetadata>();
Console.Error.WriteLine($"loaded {metadata?.DefaultModelId} ({metadata?.ProviderName})");

List<ChatMessage> chat = [new(ChatRole.System, "You are a concise assistant."), new(ChatRole.User, "Name three colours.")];
// Greedy, 32 tokens at most, a stop sequence; the engine's repetition penalty is an additional property
// (without it the demo's random weights repeat one blank line).
var options = new ChatOptions
{
    Temperature = 0f, MaxOutputTokens = 32, StopSequences = ["User:"],
    AdditionalProperties = new() { [LlamaChatClient.RepetitionPenaltyKey] = 2f },
};

// 1. A streamed reply, printed as it comes.
var updates = new List<ChatResponseUpdate>();
await foreach (var update in client.GetStreamingResponseAsync(chat, options))
{
    Console.Write(update.Text);
    updates.Add(update);
}
var streamed = updates.ToChatResponse();
Console.WriteLine($"\n[{streamed.FinishReason}, {streamed.Usage?.InputTokenCount} prompt tokens, {streamed.Usage?.OutputTokenCount} generated]");

// 2. The next turn, not streamed: the reply joins the conversation, and seeded sampling.
chat.AddMessages(streamed);
chat.Add(new(ChatRole.User, "And three more?"));
var reply = await client.GetResponseAsync(chat, new ChatOptions { Temperature = 0.8f, TopP = 0.95f, TopK = 40, Seed = 42, MaxOutputTokens = 24, AdditionalProperties = options.AdditionalProperties });
Console.WriteLine($"{reply.Text.ReplaceLineEndings(" ")}\n[{reply.FinishReason}, {reply.Usage?.OutputTokenCount} tokens, model {reply.ModelId}]");

if (streamed.Text != string.Concat(updates.Select(u => u.Text)) || reply.Usage?.OutputTokenCount is null or 0)
{
    Console.Error.WriteLine("chat client example: the replies are inconsistent");
    return 1;
}
return 0;
