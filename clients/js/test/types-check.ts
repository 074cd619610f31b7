// Compiled by test/types.test.js (tsc --noEmit --strict): the types of
// index.d.ts used the way the README uses the library.
import connect, { ChatClient, ChatError, ChatMessage, JoinResult,
                  tokenExpiry } from '../index.js';
import { connect as named } from '../index.js';

const chat: ChatClient = connect('wss://host/chat', { user: 'alice' });
const other = named('/chat', { token: 'a.b.c',
                               refreshToken: async (old) => old ?? '' });

chat.on('message', (m: ChatMessage, meta) => {
    const s: string = m.id + m.user + m.content + m.room;
    const n: number = m.ts;
    const r: boolean = meta.replay;
    void s; void n; void r;
});
chat.on('state', (s, d) => {
    if (s === 'reconnecting' && d.waitingForToken) {
        other.setToken('new');
    }
});
chat.on('gap', (g) => g.since.length);
chat.on('error', (e: ChatError) => e.code === 'rate_limited' && e.retryAfterMs);

async function main(): Promise<void> {
    const j: JoinResult = await chat.join('lobby', { history: 50 });
    const id: string = await chat.send('lobby', 'hello', { retryRateLimited: true });
    const h = await chat.history('lobby', { limit: 10, before: id });
    const users: string[] = await chat.who('lobby');
    const exp: number | null = tokenExpiry('a.b.c');
    void j.members; void h.complete; void users; void exp;
    await chat.leave('lobby');
    chat.close();
}

void main;
